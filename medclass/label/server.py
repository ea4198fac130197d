"""The uvicorn app for ``monailabel start_server ... --uvicorn_app medclass.label.server:app``.

MONAI Label's own endpoints, assembled so that a client sends data, never code or a server path, and so that
inference never blocks the event loop:

* ``POST /infer/<model>``: the image is a datastore id, an uploaded file (allow-listed type; stored under a
  random name) or a session; ``params`` are checked (:func:`medclass.label.safety.check_infer_params`).
  Inference runs in a :class:`~medclass.label.workers.WorkerPool` of ``--conf infer_workers`` threads with a
  queue of ``--conf infer_queue``; beyond it the answer is 503 with ``Retry-After``. Every answer is one MONAI
  Label's client decodes: ``output=json`` the result JSON, ``output=image`` the saliency map, otherwise (the
  client's default) a multipart form with ``params`` and a file (the saliency map, or ``result.json``).
* ``POST /train/<model>``: the body is checked (:func:`medclass.label.safety.check_train_request`) before
  MONAI Label starts the training process; ``DELETE /train/`` also removes the stopped run's work folder.
* ``PUT /datastore/image``, ``PUT /datastore/label``, ``PUT /session/``: uploads keep only an allow-listed
  extension of the client's file name, and ids and tags are checked before they become file names.
* Kept from MONAI Label as they are: ``/info``, ``/activelearning``, the rest of ``/datastore``, ``GET /train/``,
  ``GET`` / ``DELETE /session/<id>``, ``/auth`` when its authentication is on, ``/ohif`` and ``/proxy`` when
  the studies are a DICOMweb server.
* Left out: ``/model`` (its upload and deletion would let a client replace the served model; its download finds
  no file for a bundle), ``/logs`` (server paths and tracebacks), ``/batch``, ``/scoring``, WSI inference and
  ``/reload``.

Every request body is limited to ``--conf max_upload_mb``. Client mistakes are answered 4xx with one sentence
(``{"detail": ...}``); any other failure 500 with a reference, the traceback going to the server log only.

:func:`medclass.label.compat.install` runs first, so MONAI Label 0.8.5 imports next to pydicom 3.
"""

from __future__ import annotations

from medclass.label.compat import install

install()

import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import uuid  # noqa: E402
from contextlib import asynccontextmanager  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Optional  # noqa: E402

from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI, File, Form, Request, UploadFile  # noqa: E402
from fastapi.middleware.cors import CORSMiddleware  # noqa: E402
from fastapi.responses import FileResponse, JSONResponse, Response  # noqa: E402
from monailabel.config import settings  # noqa: E402
from monailabel.endpoints import activelearning, datastore, info, session, train  # noqa: E402
from monailabel.endpoints.infer import ResultType  # noqa: E402
from monailabel.endpoints.user.auth import RBAC, User  # noqa: E402
from monailabel.interfaces.datastore import DefaultLabelTag  # noqa: E402
from monailabel.interfaces.exception import (  # noqa: E402
    ImageNotFoundException, LabelNotFoundException, MONAILabelError, MONAILabelException,
)
from monailabel.interfaces.utils.app import app_instance  # noqa: E402
from monailabel.utils.others.generic import get_mime_type  # noqa: E402
from requests_toolbelt import MultipartEncoder  # noqa: E402
from starlette.concurrency import run_in_threadpool  # noqa: E402
from starlette.middleware.body_limit import RequestBodyLimitMiddleware  # noqa: E402

from medclass.label.application import MedclassApp, check_id_format, upload_limit  # noqa: E402
from medclass.label.safety import (  # noqa: E402
    IMAGE_EXTENSIONS, LABEL_EXTENSIONS, ClientError, check_id, check_infer_params, upload_extension,
)
from medclass.label.workers import WorkerPool  # noqa: E402
from medclass.saliency import METHODS as SALIENCY_METHODS  # noqa: E402

logger = logging.getLogger(__name__)

__all__ = ["app"]

USER = settings.MONAI_LABEL_AUTH_ROLE_USER
ANNOTATOR = settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR
ADMIN = settings.MONAI_LABEL_AUTH_ROLE_ADMIN
CHUNK = 1 << 20


class _State:
    """What the endpoints share, made when the server starts (:func:`lifespan`)."""

    pool: WorkerPool | None = None
    uploads: str = ""


STATE = _State()


def medclass_app() -> MedclassApp:
    instance = app_instance()
    if not isinstance(instance, MedclassApp):
        raise RuntimeError(f"medclass.label.server serves medclass.label.application.MedclassApp, not {type(instance)}")
    return instance


@asynccontextmanager
async def lifespan(_: FastAPI):
    instance = medclass_app()
    instance.server_mode(True)
    instance.on_init_complete()
    STATE.pool = WorkerPool(instance.infer_workers, instance.infer_queue)
    STATE.uploads = tempfile.mkdtemp(prefix="medclass-uploads-")
    logger.info("inference: %d workers, queue %d; uploads up to %d MB", instance.infer_workers,
                instance.infer_queue, instance.max_upload_bytes >> 20)
    yield
    STATE.pool.shutdown()
    shutil.rmtree(STATE.uploads, ignore_errors=True)


def _remove(path: str | os.PathLike) -> None:
    p = Path(path)
    if p.is_dir():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


async def save_upload(upload: UploadFile, allowed: tuple[str, ...], folder: str | os.PathLike | None = None,
                      stem: str | None = None) -> str:
    """Write an uploaded file under a name of the server's choosing: ``stem`` (default: random) + the allow-listed
    extension of the client's name (or ``.dcm`` for a DICOM without one); the client's name is never a path."""
    head = await upload.read(CHUNK)
    ext = upload_extension(upload.filename, allowed, head)
    path = Path(folder or STATE.uploads) / f"{stem or uuid.uuid4().hex}{ext}"
    with open(path, "wb") as f:
        while head:
            f.write(head)
            head = await upload.read(CHUNK)
    return str(path)


def _json_object(text: str | None, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ClientError(f"{what} must be a JSON object")
    return value


def infer_answer(result: dict[str, Any], saliency_file: str | None, output: ResultType | None) -> Response:
    """The response for ``output``: JSON, the map, or (``all`` / not given, as MONAI Label's client asks) a
    multipart form with ``params`` and a file the client saves: the map, or the result as ``result.json``."""
    if output == ResultType.json:
        return JSONResponse(result)
    if output == ResultType.image:
        return FileResponse(saliency_file, media_type=get_mime_type(saliency_file),
                            filename=os.path.basename(saliency_file))
    fields: dict[str, Any] = {"params": (None, json.dumps(result), "application/json")}
    if saliency_file:
        with open(saliency_file, "rb") as f:
            fields["image"] = (os.path.basename(saliency_file), f.read(), get_mime_type(saliency_file))
    else:
        fields["result"] = ("result.json", json.dumps(result).encode(), "application/json")
    form = MultipartEncoder(fields=fields)
    return Response(content=form.to_string(), media_type=form.content_type)


router = APIRouter()


@router.post("/infer/{model}", summary="Run a classification model on a datastore image, an upload or a session")
async def api_infer(
    background_tasks: BackgroundTasks,
    model: str,
    image: str = "",
    session_id: str = "",
    params: str = Form("{}"),
    file: UploadFile = File(None),
    label: UploadFile = File(None),  # noqa: ARG001  (sent by some viewers; classification takes none)
    output: Optional[ResultType] = None,
    user: User = Depends(RBAC(USER)),
):
    instance = medclass_app()
    task = instance.infer_task(model)
    request = check_infer_params(_json_object(params, "params"), SALIENCY_METHODS)
    if output == ResultType.dicom_seg:
        raise ClientError("a classification result has no DICOM SEG form; ask for output json, image or all")
    if output == ResultType.image:
        request["saliency"] = True  # the image a classification model answers with is its saliency map
    if file is not None:
        request["image"] = await save_upload(file, IMAGE_EXTENSIONS)
        background_tasks.add_task(_remove, request["image"])
    elif session_id:
        sessions = instance.sessions()
        found = sessions.get_session(check_id(session_id, "session")) if sessions else None
        if not found:
            raise ClientError("session not found (it may have expired)", status=404)
        request["image"] = found.image
    elif image:
        request["image"] = instance.resolve_image(image)
    else:
        raise ClientError("no image given: name a datastore image (?image=<id>) or upload a file")
    saliency_file, result = await STATE.pool.run(task, request)
    if saliency_file:
        background_tasks.add_task(_remove, saliency_file)
    return infer_answer(result, saliency_file, output)


@router.post("/train/{model}", summary="Retrain a bundle (allow-listed settings only)")
async def api_train(model: str, params: Optional[dict] = None, run_sync: bool = False, enqueue: bool = False,
                    user: User = Depends(RBAC(ADMIN))):
    clean = medclass_app().check_train(model, params)
    if run_sync:
        raise ClientError("run_sync is not offered: training runs in the background; poll GET /train/")
    return train.run_model(model, clean, False, enqueue)


@router.post("/train/", summary="Retrain every bundle: not offered, name the model")
async def api_train_all(user: User = Depends(RBAC(ADMIN))):
    raise ClientError("name the model to train: POST /train/<model>")


@router.delete("/train/", summary="Stop the training run and remove its work folder")
async def api_train_stop(user: User = Depends(RBAC(ADMIN))):
    result = await run_in_threadpool(train.stop)
    removed = await run_in_threadpool(medclass_app().cleanup_training)
    if removed:
        logger.info("removed the work folders of stopped trainings: %s", removed)
    return result


@router.put("/datastore/image", summary="Upload an image into the datastore")
async def api_add_image(image: Optional[str] = None, params: str = Form("{}"), file: UploadFile = File(...),
                        user: User = Depends(RBAC(ANNOTATOR))):
    info_ = _json_object(params, "params")
    if not image:  # the id from the file's name, when it makes a valid one
        name = os.path.basename(file.filename or "")
        ext = next((e for e in IMAGE_EXTENSIONS if name.lower().endswith(e)), "")
        image = name[: len(name) - len(ext)] if ext else name
    image_id = check_id_format(image, "image id")
    path = await save_upload(file, IMAGE_EXTENSIONS)
    try:
        if user and user.username:
            info_["user"] = user.username
        return {"image": await run_in_threadpool(medclass_app().datastore().add_image, image_id, path, info_)}
    finally:
        _remove(path)


@router.put("/datastore/label", summary="Save a label of a datastore image")
async def api_save_label(image: str, params: str = Form("{}"), tag: str = DefaultLabelTag.FINAL.value,
                         label: UploadFile = File(...), user: User = Depends(RBAC(ANNOTATOR))):
    instance = medclass_app()
    instance.resolve_image(image)  # 404 unless it is a datastore image
    tag = check_id_format(tag or DefaultLabelTag.FINAL.value, "label tag")
    info_ = _json_object(params, "params")
    path = await save_upload(label, LABEL_EXTENSIONS)
    try:
        label_id = await run_in_threadpool(instance.datastore().save_label, image, path, tag, info_)
    finally:
        _remove(path)
    res = instance.on_save_label(image, label_id) or {}
    res.update({"image": image, "label": label_id})
    return res


@router.put("/session/", summary="Create a session from uploaded image files")
async def api_create_session(uncompress: bool = False, expiry: int = 0, files: list[UploadFile] = File(...),
                             user: User = Depends(RBAC(USER))):
    sessions = medclass_app().sessions()
    if sessions is None:
        raise ClientError("sessions are not enabled on this server", status=406)
    if uncompress:
        raise ClientError("uncompress is not offered: send the image files themselves")
    folder = Path(tempfile.mkdtemp(dir=STATE.uploads))
    try:
        paths = [await save_upload(f, IMAGE_EXTENSIONS, folder, stem=f"{i:05d}") for i, f in enumerate(files)]
        if not paths:
            raise ClientError("no file given")
        source = paths[0] if len(paths) == 1 else str(folder)
        session_id, session_info = await run_in_threadpool(sessions.add_session, source, max(0, int(expiry)), False)
    finally:
        _remove(folder)
    return {"session_id": session_id, "session_info": session_info.to_json()}


def _routes(module_router: APIRouter, skip: set[tuple[str, str]] = frozenset(), only: set[str] | None = None):
    """A router holding a MONAI Label router's routes less the (method, path) pairs in ``skip`` (or only the
    methods in ``only``)."""
    out = APIRouter()
    for route in module_router.routes:
        methods = set(getattr(route, "methods", ()) or ())
        if only is not None and not methods <= only:
            continue
        if any((m, route.path) in skip for m in methods):
            continue
        out.routes.append(route)
    return out


def build_app() -> FastAPI:
    """The FastAPI app (see the module docstring for what it serves)."""
    from monailabel.endpoints import login, ohif, proxy

    conf = settings.MONAI_LABEL_APP_CONF or {}
    fastapi_app = FastAPI(title=settings.MONAI_LABEL_PROJECT_NAME, openapi_url="/openapi.json", docs_url=None,
                          redoc_url="/docs", lifespan=lifespan)
    origins = [str(o) for o in settings.MONAI_LABEL_CORS_ORIGINS] if settings.MONAI_LABEL_CORS_ORIGINS else ["*"]
    fastapi_app.add_middleware(CORSMiddleware, allow_origins=origins, allow_credentials=True, allow_methods=["*"],
                               allow_headers=["*"])
    fastapi_app.add_middleware(RequestBodyLimitMiddleware, max_body_size=upload_limit(conf))
    prefix = settings.MONAI_LABEL_API_STR
    if settings.MONAI_LABEL_AUTH_ENABLE:
        fastapi_app.include_router(login.router, prefix=prefix)
    fastapi_app.include_router(router, prefix=prefix)  # first: these win over MONAI Label's routes below
    fastapi_app.include_router(info.router, prefix=prefix)
    fastapi_app.include_router(activelearning.router, prefix=prefix)
    fastapi_app.include_router(_routes(datastore.router, skip={("PUT", "/datastore/image"),
                                                               ("PUT", "/datastore/label"),
                                                               ("PUT", "/datastore/")}), prefix=prefix)
    fastapi_app.include_router(_routes(train.router, only={"GET", "HEAD"}), prefix=prefix)
    fastapi_app.include_router(_routes(session.router, skip={("PUT", "/session/")}), prefix=prefix)
    if str(settings.MONAI_LABEL_STUDIES).startswith(("http://", "https://")):
        fastapi_app.include_router(ohif.router, prefix=prefix)
        fastapi_app.include_router(proxy.router, prefix=prefix)

    @fastapi_app.exception_handler(ClientError)
    async def client_error(_: Request, exc: ClientError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=exc.headers)

    @fastapi_app.exception_handler(MONAILabelException)
    async def monailabel_error(request: Request, exc: MONAILabelException) -> JSONResponse:
        if isinstance(exc, ImageNotFoundException):
            return JSONResponse({"detail": "image not found in the datastore"}, status_code=404)
        if isinstance(exc, LabelNotFoundException):
            return JSONResponse({"detail": "label not found in the datastore"}, status_code=404)
        if exc.error == MONAILabelError.INVALID_INPUT:
            return JSONResponse({"detail": str(exc.msg)}, status_code=422)
        return await server_error(request, exc)

    @fastapi_app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        ref = uuid.uuid4().hex[:12]
        logger.error("request %s %s failed (reference %s)", request.method, request.url.path, ref,
                     exc_info=(type(exc), exc, exc.__traceback__))
        return JSONResponse({"detail": f"internal server error (reference {ref}; the server log has the details)"},
                            status_code=500)

    return fastapi_app


app = build_app()

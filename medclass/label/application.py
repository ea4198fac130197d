"""The MONAI Label app: every medclass bundle given in ``--conf bundles`` served as a classification model and
retrainable from image-level labels kept in the datastore.

Conf keys (``monailabel start_server ... --conf KEY VALUE``):

* ``bundles``: comma-separated bundle folders (required); each is served under its folder name.
* ``bundle_overrides``: JSON object of top-level bundle values applied to every run of every bundle, e.g.
  ``'{"num_threads": 4}'``; only the keys of :data:`medclass.label.safety.OPERATOR_KEYS`, checked like a
  client's (no MONAI config code), unless widened by
* ``allow_override_keys``: comma-separated further top-level keys the operator allows in ``bundle_overrides``
  (their values must still be plain data).
* ``datalist_dirs``: comma-separated folders (besides the datastore) whose label CSV / JSON files a train
  request may name as ``datalist``.
* ``infer_workers`` (default: the cores, at most 8) and ``infer_queue`` (default 32): inference runs in that many
  worker threads; that many more requests wait; beyond, the server answers 503 with ``Retry-After``.
* ``max_upload_mb`` (default 1024): the largest request body (an uploaded image, label or session).

Infer (``POST /infer/<bundle name>``, ``params`` form field JSON; see :mod:`medclass.label.server`):

* ``saliency`` (false): also return the saliency map of the top label as the result image (PNG for 2D, NIfTI
  for 3D, on the input's grid);
* ``saliency_method`` (the bundle's ``saliency_method``: "gradcam" in 2D, "smoothgrad" in 3D): any method of
  :func:`medclass.saliency.saliency_maps`.

The image is a datastore id (``?image=<id>``), an uploaded file or a session; never a path. The JSON result
carries every label's ``name``, ``probability``, ``prediction`` (0/1 at the threshold stored in the model) and
``threshold``. An image the bundle cannot read is answered with HTTP 422 and the reason.

Train (``POST /train/<bundle name>``, JSON body): the settings of :data:`medclass.label.safety.CLIENT_TRAIN_KEYS`
(``max_epochs``, ``learning_rate``, ``batch_size``, ``seed``, ...; also accepted inside ``overrides``), each
type- and range-checked, ``from_scratch`` (false: start from the current model) and ``datalist`` (a label CSV /
JSON inside the datastore or a ``datalist_dirs`` folder, instead of the datastore labels). Anything else is
refused with HTTP 422 naming the key, before anything runs. Image-level labels are read from the datastore: an
image's info key ``labels`` (``PUT /datastore/image/info?image=<id>`` with ``info='{"labels": {"effusion": 1,
"nodule": 0}}'``), or a ``final`` label file that is a JSON object of the same form (``PUT
/datastore/label?image=<id>``). Names are matched to the bundle's label names (case-insensitive); labels not
given are unknown (masked from the loss). An image takes part in a bundle's training when it has at least one of
that bundle's labels.
"""

from __future__ import annotations

from medclass.label.compat import install as _install_compat

_install_compat()  # before monailabel.interfaces.app is imported (see medclass.label.compat)

import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from monailabel.config import settings  # noqa: E402
from monailabel.datastore.local import LocalDatastore  # noqa: E402
from monailabel.interfaces.app import MONAILabelApp  # noqa: E402
from monailabel.interfaces.datastore import Datastore, DefaultLabelTag  # noqa: E402
from monailabel.interfaces.exception import ImageNotFoundException  # noqa: E402
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType  # noqa: E402
from monailabel.interfaces.tasks.strategy import Strategy  # noqa: E402
from monailabel.interfaces.tasks.train import TrainTask  # noqa: E402
from monailabel.tasks.activelearning.first import First  # noqa: E402

from medclass.label.bundle import BundleModel, InputImageError, parse_label_value, write_label_csv  # noqa: E402
from medclass.label.safety import (  # noqa: E402
    CLIENT_TRAIN_KEYS, IMAGE_EXTENSIONS, LABEL_EXTENSIONS, OPERATOR_KEYS, ClientError, check_id,
    check_overrides, check_train_request, inside, not_found, upload_extension,
)
from medclass.saliency import METHODS as SALIENCY_METHODS  # noqa: E402

logger = logging.getLogger(__name__)

__all__ = ["MedclassApp", "MedclassInferTask", "MedclassSaliencyTask", "MedclassTrainTask", "SafeLocalDatastore",
           "datastore_labels",
           "check_id_format", "upload_limit"]

#: image files the local datastore lists, on top of MONAI Label's defaults (NIfTI, NRRD, PNG, JPEG, ...)
EXTRA_EXTENSIONS = ["*.dcm", "*.dicom", "*.jpeg"]


def _normalize(name: str) -> str:
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


def image_level_labels(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """The image-level labels of a JSON label file: an object of ``{label: value}``, or one under ``labels``.

    Raises:
        ClientError: the file is not such a JSON object (422, naming ``what``).
    """
    try:
        content = json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ClientError(f"{what} is not valid JSON: {e}") from e
    content = content.get("labels", content) if isinstance(content, dict) else None
    if not isinstance(content, dict):
        raise ClientError(f"{what} must be a JSON object of labels, e.g. {{\"labels\": {{\"effusion\": 1}}}}")
    return content


def datastore_labels(datastore: Datastore, label_names: list[str]) -> list[tuple[str, str, dict[str, float]]]:
    """Image-level labels kept in a MONAI Label datastore, for one bundle's label names.

    Args:
        datastore: the app's datastore.
        label_names: the bundle's labels.

    Returns:
        ``(image path, image id, {label name: 1.0 / 0.0 / NaN})`` for every image with at least one of the
        bundle's labels (in the image info key ``labels`` or a JSON ``final`` label file; the file wins).
    """
    wanted = {_normalize(n): n for n in label_names}
    rows = []
    for image_id in datastore.list_images():
        given: dict[str, Any] = {}
        info = datastore.get_image_info(image_id) or {}
        if isinstance(info.get("labels"), dict):
            given.update(info["labels"])
        label_file = ""
        if DefaultLabelTag.FINAL.value in (datastore.get_labels_by_image_id(image_id) or {}):
            label_file = datastore.get_label_uri(image_id, DefaultLabelTag.FINAL.value)
        if label_file and label_file.lower().endswith(".json") and os.path.isfile(label_file):
            given.update(image_level_labels(label_file, f"label file of image {image_id}"))
        labels = {}
        for key, value in given.items():
            name = wanted.get(_normalize(key))
            if name is not None:
                labels[name] = parse_label_value(value, f"image {image_id}, label {key!r}")
        if labels:
            rows.append((datastore.get_image_uri(image_id), image_id, labels))
    return rows


class SafeLocalDatastore(LocalDatastore):
    """MONAI Label's local datastore, kept inside its folder whatever a client sends.

    Image ids and label tags become file and folder names in MONAI Label's datastore, so they are checked
    (:func:`medclass.label.safety.check_id`); uploaded images and labels must have an allow-listed extension; a
    file the datastore lists that resolves (through a symlink) outside the studies folder is treated as absent.
    """

    def _root(self) -> str:
        return os.path.realpath(self._datastore_path)

    def _inside(self, uri: str) -> str:
        return uri if uri and inside(uri, [self._root()]) else ""

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        if not image_id:
            raise ClientError("name the image: PUT /datastore/image?image=<id>")
        check_id_format(image_id, "image id")
        upload_extension(image_filename, IMAGE_EXTENSIONS)
        return super().add_image(image_id, image_filename, image_info)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        """Save a label file; a JSON object of image-level labels is also merged into the image's info
        ``labels``, so a segmentation saved later under the same tag (3D Slicer's *Submit Label* saves as
        ``final``) does not take the image-level labels away."""
        check_id(image_id)
        check_id_format(label_tag, "label tag")
        if upload_extension(label_filename, LABEL_EXTENSIONS) == ".json":
            labels = image_level_labels(label_filename, f"label of image {image_id}")
            for key, value in labels.items():
                try:
                    parse_label_value(value, f"label {key!r} of image {image_id}")
                except ValueError as e:
                    raise ClientError(str(e)) from e
            if label_tag == DefaultLabelTag.FINAL.value and labels:
                current = (self.get_image_info(image_id) or {}).get("labels")
                merged = {**(current if isinstance(current, dict) else {}), **labels}
                self.update_image_info(image_id, {"labels": merged})
        return super().save_label(image_id, label_filename, label_tag, label_info)

    def _labelled(self, obj) -> bool:
        given = obj.image.info.get("labels") if obj.image and obj.image.info else None
        return bool(obj.labels.get(DefaultLabelTag.FINAL)) or (
            isinstance(given, dict) and any(v not in (None, "") for v in given.values()))

    def _served_objects(self) -> dict[str, Any]:
        """The datastore's images whose files lie inside the studies folder (symlinks leaving it are skipped)."""
        return {k: v for k, v in self._datastore.objects.items() if self.get_image_uri(k)}

    def list_images(self) -> list[str]:
        return list(self._served_objects())

    def get_labeled_images(self, label_tag: str | None = None, labels: list[str] | None = None) -> list[str]:
        """Images with a ``final`` label file or image-level labels in their info (the strategies' "labelled")."""
        return [k for k, v in self._served_objects().items() if self._labelled(v)]

    def get_unlabeled_images(self, label_tag: str | None = None, labels: list[str] | None = None) -> list[str]:
        """Images with neither a ``final`` label file nor image-level labels (what *Next Sample* offers)."""
        return [k for k, v in self._served_objects().items() if not self._labelled(v)]

    def remove_label(self, label_id: str, label_tag: str) -> None:
        check_id(label_id, "label")
        check_id_format(label_tag, "label tag")
        super().remove_label(label_id, label_tag)

    def get_image_uri(self, image_id: str) -> str:
        return self._inside(super().get_image_uri(image_id))

    def get_label_uri(self, label_id: str, label_tag: str) -> str:
        return self._inside(super().get_label_uri(label_id, label_tag))


def check_id_format(value: Any, what: str) -> str:
    """An id or tag a client chooses for something new: 422 naming the rule when it cannot be a file name."""
    try:
        return check_id(value, what)
    except ClientError:
        raise ClientError(f"{what} must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit "
                          "(no path)") from None


class MedclassInferTask(InferTask):
    """A medclass bundle as a MONAI Label classification model (see the module docstring for the request)."""

    def __init__(self, model: BundleModel) -> None:
        super().__init__(
            type=InferType.CLASSIFICATION,
            labels=list(model.label_names),
            dimension=model.spatial_dims,
            description=model.description or f"medclass bundle {model.name}",
            config={"saliency": False, "saliency_method": model.saliency_method},
        )
        self.model = model
        # saliency files go here; the server deletes each one once it has been sent
        self.out_dir = tempfile.mkdtemp(prefix=f"medclass-label-{model.name}-")

    def info(self) -> dict[str, Any]:
        out = super().info()
        out.update({"task": self.model.task, "image_size": self.model.image_size, "trained": self.model.is_trained(),
                    "saliency_methods": list(SALIENCY_METHODS)})
        return out

    def is_valid(self) -> bool:
        return self.model.is_trained()

    def __call__(self, request: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        """Classify ``request["image"]``, a path the server resolved (a datastore image, an upload or a session).

        Raises:
            ClientError: 422 for an image the bundle cannot read, 503 for a bundle without a trained model.
        """
        result, saliency_file = self.predict(request, saliency=bool(request.get("saliency", False)))
        return saliency_file, result

    def predict(self, request: dict[str, Any], **kwargs: Any) -> tuple[dict[str, Any], str | None]:
        """:meth:`BundleModel.predict` on ``request["image"]`` with the request's saliency method; its errors as
        :class:`ClientError` (422 unreadable image, 503 no trained model)."""
        image = request.get("image")
        if not isinstance(image, str) or not image:
            raise ClientError("no image given: name a datastore image (?image=<id>) or upload a file")
        try:
            return self.model.predict(image, method=request.get("saliency_method"), out_dir=self.out_dir, **kwargs)
        except InputImageError as e:
            shown = str(e).replace(image, os.path.basename(image))
            raise ClientError(f"{self.model.name} cannot use this image: {shown}") from e
        except FileNotFoundError as e:
            raise ClientError(f"{self.model.name} has no trained model yet", status=503) from e


class MedclassSaliencyTask(MedclassInferTask):
    """A bundle as a *segmentation* model, the form 3D Slicer's MONAI Label module runs (its *Auto Segmentation*
    lists segmentation models only): the label map is the top finding's saliency map thresholded at
    ``saliency_threshold`` (NIfTI in the input's geometry), the result params carry every probability and
    decision as for the classification model, and ``label_names`` names the one segment after the finding, its
    probability and its decision, which is what Slicer shows in its segment list.

    Served as ``<bundle>_saliency`` beside the classification model ``<bundle>``.
    """

    SUFFIX = "_saliency"

    def __init__(self, model: BundleModel) -> None:
        InferTask.__init__(
            self,
            type=InferType.SEGMENTATION,
            labels=list(model.label_names),
            dimension=model.spatial_dims,
            description=f"{model.name}: where the top finding's evidence is (thresholded saliency map)",
            config={"saliency_method": model.saliency_method, "saliency_threshold": 0.5},
        )
        self.model = model
        self.out_dir = tempfile.mkdtemp(prefix=f"medclass-label-{model.name}-saliency-")

    def __call__(self, request: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        result, mask = self.predict(request, saliency=True, saliency_format="mask",
                                    saliency_threshold=float(request.get("saliency_threshold", 0.5)))
        top = next(x for x in result["labels"] if x["name"] == result["top_label"])
        decision = "positive" if top["prediction"] else "negative"
        result["label_names"] = [f"{top['name']} p={top['probability']:.2f} ({decision} at {top['threshold']:.2f})"]
        return mask, result


class MedclassTrainTask(TrainTask):
    """Retrains a medclass bundle from image-level labels (datastore or a CSV) with its own train workflow.

    Args:
        model: the bundle.
        datalist_roots: folders whose label files a request may name (the datastore first).
    """

    def __init__(self, model: BundleModel, datalist_roots: list[str]) -> None:
        super().__init__(f"retrain {model.name} from image-level labels with the bundle's train workflow")
        self.model = model
        self.datalist_roots = list(datalist_roots)

    def config(self) -> dict[str, Any]:
        return {"max_epochs": self.model.max_epochs, "from_scratch": False}

    def info(self) -> dict[str, Any]:
        out = super().info()
        out["settings"] = {k: {"type": v.kind.__name__, "min": v.low, "max": v.high, "doc": v.doc}
                           for k, v in CLIENT_TRAIN_KEYS.items()}
        return out

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        # the server checked the request before starting this process; checked again here (this is what runs)
        clean = check_train_request(request, self.datalist_roots)
        overrides = dict(clean.get("overrides", {}))
        max_epochs = overrides.pop("max_epochs", None)
        datalist = clean.get("datalist")
        with tempfile.TemporaryDirectory(prefix="medclass-train-") as tmp:
            if not datalist:
                rows = datastore_labels(datastore, self.model.label_names)
                if not rows:
                    raise ValueError(
                        f"no image in the datastore has labels for {self.model.name} ({self.model.label_names}); "
                        "set them with PUT /datastore/image/info (info={\"labels\": {...}})"
                    )
                datalist = os.path.join(tmp, "labels.csv")
                n = write_label_csv(datalist, rows, self.model.label_names)
                logger.info("%s: training on %d labelled datastore images", self.model.name, n)
            return self.model.train(datalist, max_epochs=max_epochs, from_scratch=clean.get("from_scratch", False),
                                    overrides=overrides)


class RandomUnlabelled(Strategy):
    """*Next Sample*: a random image without labels (:meth:`SafeLocalDatastore.get_unlabeled_images`), favouring
    those offered longest ago. MONAI Label's own ``Random`` weighs by the seconds since an image was last offered
    and fails ("Total of weights must be greater than zero") when every candidate was offered within the same
    second; here every weight is at least 1."""

    def __init__(self) -> None:
        super().__init__("Random unlabelled image")

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any] | None:
        images = datastore.get_unlabeled_images(request.get("label_tag"), request.get("labels"))
        if not images:
            return None
        strategy, now = request.get("strategy", "random"), int(time.time())
        offered = [(datastore.get_image_info(i) or {}).get("strategy", {}).get(strategy, {}).get("ts", 0)
                   for i in images]
        weights = [max(1, now - ts) for ts in offered]
        k = random.choices(range(len(images)), weights=weights)[0]
        return {"id": images[k], "weight": weights[k]}


def _conf_list(conf: dict[str, Any], key: str) -> list[str]:
    return [p.strip() for p in str(conf.get(key) or "").split(",") if p.strip()]


def _conf_int(conf: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = conf.get(key)
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"--conf {key} must be a whole number, got {value!r}") from None
    if not low <= number <= high:
        raise ValueError(f"--conf {key} must be between {low} and {high}, got {number}")
    return number


def upload_limit(conf: dict[str, Any]) -> int:
    """The largest request body in bytes: ``--conf max_upload_mb`` (default 1024)."""
    return _conf_int(conf, "max_upload_mb", 1024, 1, 1 << 20) << 20


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class MedclassApp(MONAILabelApp):
    """MONAI Label app serving the medclass bundles named by ``--conf bundles a,b`` (see the module docstring)."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        conf = dict(conf or {})
        paths = _conf_list(conf, "bundles")
        if not paths:
            raise ValueError("medclass label app: no bundles given; start with --conf bundles <folder>[,<folder>...]")
        overrides = conf.get("bundle_overrides") or {}
        if isinstance(overrides, str):
            try:
                overrides = json.loads(overrides)
            except ValueError as e:
                raise ValueError(f"--conf bundle_overrides must be a JSON object: {e}") from e
        # the operator's values pass the client's checks; keys beyond OPERATOR_KEYS only when named explicitly
        self.allow_override_keys = _conf_list(conf, "allow_override_keys")
        overrides = check_overrides(overrides, OPERATOR_KEYS, extra_keys=self.allow_override_keys,
                                    where="--conf bundle_overrides")
        self.datalist_dirs = [os.path.realpath(p) for p in _conf_list(conf, "datalist_dirs")]
        cores = _cores()
        self.infer_workers = _conf_int(conf, "infer_workers", min(cores, 8), 1, 64)
        self.infer_queue = _conf_int(conf, "infer_queue", 32, 0, 10000)
        self.max_upload_bytes = upload_limit(conf)
        if "num_threads" not in overrides:  # the workers share the cores instead of each using all of them
            import torch

            torch.set_num_threads(max(1, cores // self.infer_workers))
        self.models: dict[str, BundleModel] = {}
        for p in paths:
            model = BundleModel(p, overrides=overrides)
            if model.name in self.models:
                raise ValueError(f"two bundles are named {model.name!r}: {self.models[model.name].bundle_dir}, {p}")
            self.models[model.name] = model
            logger.info("serving %s (%dD, labels %s)%s", model.name, model.spatial_dims, model.label_names,
                        "" if model.is_trained() else f": no {model.model_path} yet, train it first")
        labels: list[str] = []
        for m in self.models.values():
            labels += [n for n in m.label_names if n not in labels]
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="medclass",
                         description="medclass classification bundles", version="1", labels=labels)

    # ------------------------------------------------------------------ MONAI Label hooks
    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):
            return super().init_datastore()
        extensions = list(settings.MONAI_LABEL_DATASTORE_FILE_EXT) + EXTRA_EXTENSIONS
        return SafeLocalDatastore(self.studies, extensions=extensions,
                                  auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
                                  read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY)

    def init_infers(self) -> dict[str, InferTask]:
        tasks: dict[str, InferTask] = {}
        for name, m in self.models.items():
            tasks[name] = MedclassInferTask(m)
            tasks[name + MedclassSaliencyTask.SUFFIX] = MedclassSaliencyTask(m)
        return tasks

    def init_strategies(self) -> dict[str, Strategy]:
        return {"random": RandomUnlabelled(), "first": First()}

    def init_trainers(self) -> dict[str, TrainTask]:
        return {name: MedclassTrainTask(m, self.datalist_roots()) for name, m in self.models.items()}

    def info(self) -> dict[str, Any]:
        out = super().info()
        out["limits"] = {"infer_workers": self.infer_workers, "infer_queue": self.infer_queue,
                         "max_upload_mb": self.max_upload_bytes >> 20}
        return out

    # ------------------------------------------------------------------ what the server's endpoints call
    def datalist_roots(self) -> list[str]:
        """Folders a train request's ``datalist`` may lie in: the local datastore, then ``datalist_dirs``."""
        local = [] if self.studies.startswith(("http://", "https://")) else [os.path.realpath(self.studies)]
        return local + self.datalist_dirs

    def infer_task(self, model: str) -> MedclassInferTask:
        """The inference task of a served bundle (404 for any other name)."""
        task = self._infers.get(model) if isinstance(model, str) else None
        if task is None:
            raise ClientError(f"model {model!r} is not served here; GET /info/ lists the models", status=404)
        if not task.is_valid():
            raise ClientError(f"model {model!r} has no trained model yet; train it first", status=503)
        return task

    def check_train(self, model: str, params: Any) -> dict[str, Any]:
        """A train request made data (:func:`medclass.label.safety.check_train_request`) for a served bundle."""
        if model not in self._trainers:
            raise ClientError(f"model {model!r} has no trainer here; GET /info/ lists the trainers", status=404)
        return check_train_request(params, self.datalist_roots())

    def resolve_image(self, image_id: Any) -> str:
        """The file (or DICOM series folder) of a datastore image id; 404 for anything else.

        A path, a URL, ``..`` or an id whose file lies (through a symlink) outside the studies folder get the same
        404 as an unknown id, whether or not the target exists.
        """
        check_id(image_id)
        try:
            uri = self.datastore().get_image_uri(image_id)
        except ImageNotFoundException:
            uri = ""
        local = not self.studies.startswith(("http://", "https://"))
        if not uri or not os.path.exists(uri) or (local and not inside(uri, [self.studies])):
            raise not_found("image", image_id)
        return uri

    def cleanup_training(self, wait: float = 10.0) -> list[str]:
        """Remove the work folders of stopped or killed trainings (``models/.train-*``); returns the removed.

        Args:
            wait: seconds to wait for a just-killed training process to be gone (a kill is not instant).
        """
        deadline = time.monotonic() + wait
        while any(m.work_folders() != m.stale_work_folders() for m in self.models.values()) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        removed = []
        for m in self.models.values():
            for work in m.stale_work_folders():
                shutil.rmtree(work, ignore_errors=True)
                removed.append(str(work))
        return removed

"""The MONAI Label app: every medclass bundle given in ``--conf bundles`` served as a classification model and
retrainable from image-level labels kept in the datastore.

Conf keys (``monailabel start_server ... --conf KEY VALUE``):

* ``bundles``: comma-separated bundle folders (required); each is served under its folder name.
* ``bundle_overrides``: JSON object of top-level bundle values applied to every run of every bundle, e.g.
  ``'{"num_threads": 4}'``.

Infer (``POST /infer/<bundle name>``, ``params`` form field JSON):

* ``saliency`` (false): also return the saliency map of the top label as the result image (PNG for 2D, NIfTI
  for 3D, on the input's grid);
* ``saliency_method`` (the bundle's ``saliency_method``: "gradcam" in 2D, "smoothgrad" in 3D): any method of
  :func:`medclass.saliency.saliency_maps`.

The JSON result carries every label's ``name``, ``probability``, ``prediction`` (0/1 at the threshold stored in
the model) and ``threshold``. An image the bundle cannot read is answered with HTTP 422 and the reason.

Train (``POST /train/<bundle name>``, JSON body of params): ``max_epochs``, ``from_scratch`` (false: start from
the current model), ``datalist`` (a label CSV on the server instead of the datastore labels) and ``overrides``
(top-level bundle values for this run). Image-level labels are read from the datastore: an image's info key
``labels`` (``PUT /datastore/image/info?image=<id>`` with ``info='{"labels": {"effusion": 1, "nodule": 0}}'``),
or a ``final`` label file that is a JSON object of the same form (``PUT /datastore/label?image=<id>``). Names
are matched to the bundle's label names (case-insensitive); labels not given are unknown (masked from the loss).
An image takes part in a bundle's training when it has at least one of that bundle's labels.
"""

from __future__ import annotations

from medclass.label.compat import install as _install_compat

_install_compat()  # before monailabel.interfaces.app is imported (see medclass.label.compat)

import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from fastapi import HTTPException  # noqa: E402
from monailabel.config import settings  # noqa: E402
from monailabel.datastore.local import LocalDatastore  # noqa: E402
from monailabel.interfaces.app import MONAILabelApp  # noqa: E402
from monailabel.interfaces.datastore import Datastore, DefaultLabelTag  # noqa: E402
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType  # noqa: E402
from monailabel.interfaces.tasks.train import TrainTask  # noqa: E402

from medclass.label.bundle import BundleModel, InputImageError, parse_label_value, write_label_csv  # noqa: E402
from medclass.utils import flag  # noqa: E402

logger = logging.getLogger(__name__)

__all__ = ["MedclassApp", "MedclassInferTask", "MedclassTrainTask", "datastore_labels"]

#: image files the local datastore lists, on top of MONAI Label's defaults (NIfTI, NRRD, PNG, JPEG, ...)
EXTRA_EXTENSIONS = ["*.dcm", "*.dicom", "*.jpeg"]


def _normalize(name: str) -> str:
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


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
            try:
                content = json.loads(Path(label_file).read_text())
            except ValueError as e:
                raise ValueError(f"{label_file}: label file of image {image_id} is not valid JSON: {e}") from e
            content = content.get("labels", content) if isinstance(content, dict) else None
            if not isinstance(content, dict):
                raise ValueError(f"{label_file}: label file of image {image_id} must be a JSON object of labels")
            given.update(content)
        labels = {}
        for key, value in given.items():
            name = wanted.get(_normalize(key))
            if name is not None:
                labels[name] = parse_label_value(value, f"image {image_id}, label {key!r}")
        if labels:
            rows.append((datastore.get_image_uri(image_id), image_id, labels))
    return rows


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
        # saliency files go here; MONAI Label deletes each one once it has been sent
        self.out_dir = tempfile.mkdtemp(prefix=f"medclass-label-{model.name}-")

    def info(self) -> dict[str, Any]:
        out = super().info()
        out.update({"bundle": str(self.model.bundle_dir), "task": self.model.task,
                    "image_size": self.model.image_size, "trained": self.model.is_trained()})
        return out

    def is_valid(self) -> bool:
        return self.model.is_trained()

    def __call__(self, request: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        image = request.get("image")
        if not isinstance(image, str) or not image:
            raise HTTPException(status_code=422, detail="no image given (upload a file or name a datastore image)")
        if not os.path.exists(image):
            raise HTTPException(status_code=404, detail=f"image {image!r} not found in the datastore")
        try:
            saliency = flag(request.get("saliency", False), "saliency")
        except ValueError as e:
            raise HTTPException(status_code=422, detail=str(e)) from e
        method = str(request.get("saliency_method", self.model.saliency_method))
        try:
            result, saliency_file = self.model.predict(image, saliency=saliency, method=method, out_dir=self.out_dir)
        except InputImageError as e:
            shown = str(e).replace(image, os.path.basename(image))
            raise HTTPException(status_code=422, detail=f"{self.model.name} cannot use this image: {shown}") from e
        except FileNotFoundError as e:
            raise HTTPException(status_code=503, detail=str(e)) from e
        return saliency_file, result


class MedclassTrainTask(TrainTask):
    """Retrains a medclass bundle from image-level labels (datastore or a CSV) with its own train workflow."""

    def __init__(self, model: BundleModel) -> None:
        super().__init__(f"retrain {model.name} from image-level labels with the bundle's train workflow")
        self.model = model

    def config(self) -> dict[str, Any]:
        return {"max_epochs": self.model.max_epochs, "from_scratch": False}

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        datalist = request.get("datalist")
        overrides = request.get("overrides") or {}
        if isinstance(overrides, str):
            overrides = json.loads(overrides)
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
            return self.model.train(datalist, max_epochs=request.get("max_epochs"),
                                    from_scratch=request.get("from_scratch", False), overrides=overrides)


class MedclassApp(MONAILabelApp):
    """MONAI Label app serving the medclass bundles named by ``--conf bundles a,b`` (see the module docstring)."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        conf = dict(conf or {})
        paths = [p.strip() for p in str(conf.get("bundles", "")).split(",") if p.strip()]
        if not paths:
            raise ValueError("medclass label app: no bundles given; start with --conf bundles <folder>[,<folder>...]")
        overrides = conf.get("bundle_overrides") or {}
        if isinstance(overrides, str):
            try:
                overrides = json.loads(overrides)
            except ValueError as e:
                raise ValueError(f"--conf bundle_overrides must be a JSON object: {e}") from e
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

    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):
            return super().init_datastore()
        extensions = list(settings.MONAI_LABEL_DATASTORE_FILE_EXT) + EXTRA_EXTENSIONS
        return LocalDatastore(self.studies, extensions=extensions,
                              auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
                              read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY)

    def init_infers(self) -> dict[str, InferTask]:
        return {name: MedclassInferTask(m) for name, m in self.models.items()}

    def init_trainers(self) -> dict[str, TrainTask]:
        return {name: MedclassTrainTask(m) for name, m in self.models.items()}

"""Serve and retrain one medclass bundle through its own workflows (no MONAI Label needed here).

:class:`BundleModel` is what the MONAI Label tasks (:mod:`medclass.label.application`) call:

* :meth:`BundleModel.predict` runs the bundle's ``inference`` workflow (``configs/inference.yaml``, which holds
  the bundle's values, through :class:`monai.bundle.ConfigWorkflow`) on one image, so preprocessing,
  checkpoint loading, precision and post-processing are the bundle's own and the probabilities equal those of
  ``python -m monai.bundle run ... inference.yaml --input <image>``. It returns each label's probability and its
  0/1 decision at the thresholds stored in the model (the ``thresholds`` buffer, as in ``predictions.csv``), and
  optionally the saliency map of the top label resampled onto the input image's grid.
* :meth:`BundleModel.train` runs the bundle's ``train`` workflow on a label CSV and replaces ``models/model.pt``
  atomically; a failed run leaves the previous model in place.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medclass import vocab
from medclass.bundle_tools import config_files
from medclass.engines import autocast_context, resolve_precision
from medclass.errors import user_error
from medclass.files import atomic_write
from medclass.label.safety import config_code
from medclass.metrics import decisions
from medclass.plan import PLAN_FILE, is_auto
from medclass.saliency import SaliencyMethod, resample_axis_aligned
from medclass.transforms import input_geometry
from medclass.vocab import flag, resolve_thresholds

logger = logging.getLogger(__name__)

__all__ = ["BundleModel", "InputImageError", "write_label_csv", "parse_label_value"]


class InputImageError(ValueError):
    """The image given for inference cannot be read or does not suit the bundle (a client error)."""


def parse_label_value(value: Any, where: str) -> float:
    """An image-level label value from a client: :func:`medclass.vocab.parse_label_value` with its yes/no words
    (1/0, true/false, yes/no, positive/negative; unknown: None, "", NaN, -1, unknown)."""
    return vocab.parse_label_value(value, where, words=True)


def write_label_csv(path: str | os.PathLike, rows: Iterable[tuple[str, str, Mapping[str, float]]],
                    label_names: Sequence[str]) -> int:
    """Write a medclass label CSV (``image``, ``id``, one column per label: 1, 0 or empty for unknown).

    Args:
        path: CSV file to write.
        rows: ``(image path, image id, {label name: 1.0 / 0.0 / NaN})``; missing names are unknown.
        label_names: the bundle's label order.

    Returns:
        The number of rows written.
    """
    n = 0
    with atomic_write(path, newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "id", *label_names])
        for image, image_id, labels in rows:
            cells = []
            for name in label_names:
                v = labels.get(name, math.nan)
                cells.append("" if v is None or math.isnan(v) else int(v))
            w.writerow([image, image_id, *cells])
            n += 1
    return n


def _data_only(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``values`` unchanged, or ValueError when one of them is MONAI config code (see
    :func:`medclass.label.safety.config_code`): the last guard before values from outside reach the parser."""
    for key, value in values.items():
        why = config_code(key) or config_code(value)
        if why:
            raise ValueError(f"{where}: {key!r} is refused: it {why}")
    return dict(values)


#: the file in a training's work folder naming the process that owns it
OWNER_FILE = "owner.pid"


def _alive(pid: int) -> bool:
    """Whether a process with this id runs (and is not this one's finished child left as a zombie)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child that nobody waited for yet still answers kill(0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _volume_file(path: Path) -> bool:
    """Whether a file is a NIfTI / NRRD / MHA image (formats that carry a voxel-to-world geometry)."""
    return path.name.lower().endswith((".nii", ".nii.gz", ".nrrd", ".mha"))


def _file_signature(path: Path) -> tuple[int, int, int] | None:
    """(inode, modification time in ns, size) of a file, None when it is missing: changes when it is replaced."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class _Served:
    """The inference workflow's pieces, built once: preprocessing, network with the model loaded, inferer,
    post-processing, precision (see :meth:`BundleModel._served`)."""

    def __init__(self, signature, preprocessing, network, inferer, postprocessing, precision, device) -> None:
        self.signature = signature
        self.preprocessing = preprocessing
        self.reader = preprocessing.transforms[0]
        self.network = network
        self.inferer = inferer
        self.postprocessing = postprocessing
        self.precision = precision
        self.device = device
        self.uncertainty: np.ndarray | None = None  # (C,) of the last image, where the inferer gives one

    @classmethod
    def load(cls, model: BundleModel, signature) -> _Served:
        from ignite.handlers import Checkpoint

        wf = model._workflow(model.inference_files, "inference")
        get = wf.parser.get_parsed_content
        device = get("device")
        network = get("network")
        # as the workflow's CheckpointLoader does (a bare state dict is the "model" entry; strict)
        checkpoint = torch.load(model.model_path, map_location=device, weights_only=True)
        if "model" not in checkpoint:
            checkpoint = {"model": checkpoint}
        Checkpoint.load_objects(to_load={"model": network}, checkpoint=checkpoint, strict=True)
        network.eval()
        precision = resolve_precision(get("precision"), device)
        logger.info("%s: loaded %s (%s, %s)", model.name, model.model_path, precision, device)
        return cls(signature, get("preprocessing"), network, get("inferer"), get("postprocessing"), precision,
                   device)

    def _batch(self, image: torch.Tensor) -> torch.Tensor:
        plain = getattr(image, "as_tensor", None)  # MetaTensor -> Tensor, as the Evaluator's batches are
        return (plain() if callable(plain) else torch.as_tensor(image)).unsqueeze(0).to(self.device)

    def _probabilities_of(self, logits: torch.Tensor) -> np.ndarray:
        pred = self.postprocessing({"pred": logits.float()[0]})["pred"]
        return np.asarray(torch.as_tensor(pred).detach().float().cpu(), dtype=np.float64)

    def probabilities(self, image: torch.Tensor) -> np.ndarray:
        """``(C,)`` probabilities of one preprocessed image ``(C, *spatial)``, as the workflow's Evaluator computes
        them (eval mode, autocast at the bundle's precision, logits in fp32, then the post-processing)."""
        with torch.no_grad(), autocast_context(self.precision, self.device):
            logits = self.inferer(self._batch(image), self.network)
        spread = getattr(self.inferer, "last_spread", None)  # an ensemble / TTA / MC-dropout: the uncertainty
        self.uncertainty = spread[0].float().cpu().numpy() if isinstance(spread, torch.Tensor) else None
        return self._probabilities_of(logits)

    def one_pass(self, method: SaliencyMethod) -> bool:
        """Whether :meth:`probabilities_and_map` gives the probabilities from the map's own forward pass: a CAM
        method and an inferer that averages nothing (no TTA, MC-dropout or ensemble)."""
        single = getattr(self.inferer, "single", None)
        return method.one_pass and callable(single) and single(self.network)

    def probabilities_and_map(self, image: torch.Tensor, method: SaliencyMethod) -> tuple[np.ndarray, torch.Tensor]:
        """``(C,)`` probabilities and the ``(1, 1, *spatial)`` map of the top label of one preprocessed image.

        With :meth:`one_pass`, one forward pass at the bundle's precision gives both (its logits equal the
        inference pass's); otherwise the probabilities as :meth:`probabilities`, then the map at that precision.
        """
        if self.one_pass(method):
            self.uncertainty = None
            logits, maps = method.explain(self.network, self._batch(image), precision=self.precision)
            return self._probabilities_of(logits), maps
        probs = self.probabilities(image)
        maps = method.maps(self.network, self._batch(image), targets=[int(np.argmax(probs))], precision=self.precision)
        return probs, maps


class BundleModel:
    """One medclass bundle served for inference and retrained from image-level labels.

    Args:
        bundle_dir: the bundle folder (``configs/inference.yaml``, ``configs/train.yaml``, ``configs/metadata.json``,
            ``models/model.pt``; ``configs/common.yaml`` where the bundle keeps its values apart, as in this repository).
        overrides: top-level config values applied to every workflow run (e.g. ``{"num_threads": 2}``).
        name: the model name shown to clients (default: the folder name).
    """

    def __init__(self, bundle_dir: str | os.PathLike, overrides: Mapping[str, Any] | None = None,
                 name: str | None = None) -> None:
        from monai.bundle import ConfigParser

        self.bundle_dir = Path(bundle_dir).expanduser().resolve()
        if not (self.bundle_dir / "configs" / "inference.yaml").is_file():
            raise ValueError(f"{self.bundle_dir}: not a medclass bundle (no configs/inference.yaml)")
        self.name = name or self.bundle_dir.name
        self.overrides = _data_only(overrides or {}, "overrides")
        self.inference_files = config_files(self.bundle_dir, "inference.yaml")
        self.train_files = config_files(self.bundle_dir, "train.yaml")
        meta = self.bundle_dir / "configs" / "metadata.json"
        self.meta_file = str(meta) if meta.is_file() else None
        parser = ConfigParser()
        parser.read_config(self.inference_files)
        parser.update({"bundle_root": str(self.bundle_dir), **self.overrides})
        self.label_names = [str(n) for n in parser.get_parsed_content("label_names")]
        self.spatial_dims = int(parser.get_parsed_content("spatial_dims"))
        self.task = str(parser.get_parsed_content("task"))
        size = parser.get_parsed_content("image_size")
        self.image_size = [int(s) for s in size] if size is not None else None
        self.model_path = Path(parser.get_parsed_content("model_path"))
        # the bundle's own default saliency method (3D: smoothgrad), "gradcam" for bundles without one
        self.saliency_method = str(parser.get_parsed_content("saliency_method")) if "saliency_method" in parser \
            else "gradcam"
        epochs = self.train_config("max_epochs")  # auto: chosen from the training data (medclass.plan)
        self.max_epochs: int | str = "auto" if is_auto(epochs) else int(epochs)
        try:
            import json

            self.description = json.loads(meta.read_text()).get("description", "") if self.meta_file else ""
        except ValueError:
            self.description = ""
        self._local = threading.local()  # each inference thread's _Served

    def train_config(self, key: str) -> Any:
        """A value of the bundle's train config (with the overrides)."""
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        parser.read_config(self.train_files)
        parser.update({"bundle_root": str(self.bundle_dir), **self.overrides})
        return parser.get_parsed_content(key)

    def is_trained(self) -> bool:
        """Whether ``models/model.pt`` exists."""
        return self.model_path.is_file()

    # ------------------------------------------------------------------ inference
    def _workflow(self, files: list[str], workflow_type: str, **overrides):
        from monai.bundle import ConfigWorkflow

        wf = ConfigWorkflow(
            config_file=files,
            meta_file=self.meta_file,
            logging_file=False,  # keep the server's logging configuration
            workflow_type=workflow_type,
            bundle_root=str(self.bundle_dir),
            **{**self.overrides, **overrides},
        )
        wf.initialize()
        return wf

    def _served(self) -> _Served:
        """This thread's inference pieces of the bundle, loaded again when ``models/model.pt`` changed.

        Each thread (one per inference worker of the server) keeps its own network and transforms, so requests
        run side by side and a saliency method's hooks never touch another request's network. A model file
        replaced by training (``os.replace``) is seen by the next request of every thread.
        """
        signature = _file_signature(self.model_path)
        served = getattr(self._local, "served", None)
        if served is None or served.signature != signature:
            if signature is None:
                raise FileNotFoundError(f"{self.model_path}: the bundle {self.name} has no trained model yet")
            served = _Served.load(self, signature)
            self._local.served = served
        return served

    def predict(self, image: str | os.PathLike, saliency: bool = False, method: str | None = None,
                out_dir: str | os.PathLike | None = None, saliency_format: str | None = None,
                saliency_threshold: float = 0.5) -> tuple[dict[str, Any], str | None]:
        """Classify one image with the pieces of the bundle's ``inference`` workflow.

        The preprocessing, network (with ``models/model.pt`` loaded as the workflow's ``CheckpointLoader``
        loads it), precision, inferer and post-processing are the workflow's own objects, built once per thread
        (:meth:`_served`), so the probabilities equal those of ``python -m monai.bundle run ... inference.yaml
        --input <image>``.

        Args:
            image: an image file (PNG/JPEG/DICOM/NIfTI for 2D; NIfTI, 3D DICOM or a DICOM series folder for 3D).
            saliency: also write the saliency map of the top label on the grid of the input image (its shape and
                affine), in ``saliency_format``.
            method: saliency method (see :func:`medclass.saliency.saliency_maps`); ``None``: the bundle's
                ``saliency_method`` (:attr:`saliency_method`).
            out_dir: folder for the saliency file (default: a new temporary folder).
            saliency_format: ``png`` (values 0-255, the reader's display order; 2D only), ``nifti`` (values 0-1
                on the input file's own voxel grid and affine, :func:`medclass.transforms.input_geometry`) or
                ``mask`` (the same as a uint8 label map, 1 where the map is at least ``saliency_threshold``: what
                3D Slicer loads as a segment); default ``png`` for 2D DICOM / PNG / JPEG, ``nifti`` for 3D and for
                2D NIfTI / NRRD / MHA files (a viewer sent them: the map goes back in their geometry).
            saliency_threshold: the map value (0-1, 1 = the map's maximum) a ``mask`` starts at.

        Returns:
            ``(result, saliency_file)``: ``result`` holds ``labels`` (one entry per label: ``name``,
            ``probability``, ``prediction`` (0/1), ``threshold``), ``probabilities`` and ``predictions`` by name,
            ``top_label``, ``positive`` (labels decided 1), ``uncertainty`` by name (an ensemble model, TTA or
            MC-dropout: the spread of the averaged probabilities) and, with saliency, ``saliency`` (label, method, shape).
            ``latency_s`` gives ``inference`` seconds and, with saliency, ``saliency`` (writing the map file): a
            Grad-CAM / Grad-CAM++ map comes from the prediction's own forward pass, so ``inference`` includes it.

        Raises:
            InputImageError: the image cannot be read or does not suit the bundle (message names the problem).
            FileNotFoundError: the bundle has no trained model.
        """
        image = Path(image)
        method = self.saliency_method if method is None else method
        fmt = saliency_format or ("png" if self.spatial_dims == 2 and not _volume_file(image) else "nifti")
        if fmt not in ("png", "nifti", "mask") or (fmt == "png" and self.spatial_dims != 2):
            raise ValueError(f"saliency_format must be nifti or mask{' or png' * (self.spatial_dims == 2)}, got {fmt!r}")
        served = self._served()
        t0 = time.perf_counter()
        try:
            pre = served.preprocessing({"image": str(image), "id": "input"})["image"]
        except Exception as exc:
            user = user_error(exc)
            if user is not None:
                raise InputImageError(str(user)) from exc
            raise
        explained = SaliencyMethod.of(method) if flag(saliency, "saliency") else None
        if explained is None:
            probs, maps = served.probabilities(pre), None
        else:  # a CAM comes from the prediction's own forward pass (:meth:`_Served.probabilities_and_map`)
            probs, maps = served.probabilities_and_map(pre, explained)
        thresholds = resolve_thresholds(None, served.network, self.label_names)
        dec = decisions(probs.reshape(1, -1), thresholds, self.task)[0]
        labels = [
            {"name": n, "probability": float(probs[i]), "prediction": int(dec[i]), "threshold": float(thresholds[i])}
            for i, n in enumerate(self.label_names)
        ]
        top = int(np.argmax(probs))
        result: dict[str, Any] = {
            "model": self.name,
            "task": self.task,
            "labels": labels,
            "probabilities": {x["name"]: x["probability"] for x in labels},
            "predictions": {x["name"]: x["prediction"] for x in labels},
            "positive": [x["name"] for x in labels if x["prediction"]],
            "top_label": self.label_names[top],
            "latency_s": {"inference": round(time.perf_counter() - t0, 4)},
        }
        if served.uncertainty is not None:
            result["uncertainty"] = {n: float(u) for n, u in zip(self.label_names, served.uncertainty)}
        saliency_file = None
        if explained is not None:
            t1 = time.perf_counter()
            saliency_file, shape = self._saliency(maps, pre, served.reader, image, Path(out_dir) if out_dir else None,
                                                  fmt, saliency_threshold)
            result["saliency"] = {"label": self.label_names[top], "method": method, "shape": shape, "format": fmt}
            if fmt == "mask":
                result["saliency"]["threshold"] = saliency_threshold
            result["latency_s"]["saliency"] = round(time.perf_counter() - t1, 4)
        return result, saliency_file

    def _saliency(self, maps: torch.Tensor, pre, reader, image: Path, out_dir: Path | None,
                  fmt: str, threshold: float) -> tuple[str, list[int]]:
        """The saliency map ``maps`` ``(1, 1, *spatial)`` of ``pre`` written on the input image's grid (see
        :meth:`predict` for ``fmt``)."""
        from monai.data import MetaTensor
        from monai.transforms import ResampleToMatch

        # the map lives on the preprocessed grid (affine tracked by the bundle's transforms); resample it onto
        # the grid the bundle's reader gives the raw input (its shape and affine)
        raw = reader({"image": str(image), "id": "input"})["image"]
        pre_affine = pre.affine if hasattr(pre, "affine") else raw.affine
        src_affine = torch.as_tensor(pre_affine, dtype=torch.float64)
        m = maps[0].float()
        if tuple(m.shape[1:]) != tuple(raw.shape[1:]) or not torch.allclose(src_affine, raw.affine.to(torch.float64)):
            # a resize / flip / axis swap (what preprocessing does): per-axis weights; anything else: MONAI's grid
            moved = resample_axis_aligned(m, src_affine, raw.affine, raw.shape[1:])
            if moved is None:
                moved = ResampleToMatch(mode="bilinear", padding_mode="zeros")(MetaTensor(m, affine=src_affine),
                                                                               img_dst=raw)
            m = moved
        arr = np.clip(np.asarray(m.detach().cpu())[0], 0.0, 1.0).astype(np.float32)
        out_dir = out_dir or Path(tempfile.mkdtemp(prefix="medclass-saliency-"))
        out_dir.mkdir(parents=True, exist_ok=True)
        if fmt == "png":
            from PIL import Image

            path = out_dir / f"saliency_{uuid.uuid4().hex[:8]}.png"
            # fast zlib level: at 1024x1024 the default level took 21 ms, more than the rest of the map's writing
            Image.fromarray(np.round(arr * 255.0).astype(np.uint8)).save(path, compress_level=1)
        else:  # NIfTI on the input's own voxel grid and affine: a viewer lays it over the image it came from
            import nibabel as nib

            data = (arr >= threshold).astype(np.uint8) if fmt == "mask" else arr
            geometry = input_geometry(raw, image)
            data = geometry.to_input(data)
            path = out_dir / f"saliency_{uuid.uuid4().hex[:8]}.nii.gz"
            nib.save(nib.Nifti1Image(data[..., None] if data.ndim == 2 else data, geometry.affine), str(path))
        return str(path), [int(s) for s in arr.shape]

    # ------------------------------------------------------------------ training
    def work_folders(self) -> list[Path]:
        """The work folders of trainings, running or not: ``models/.train-*``."""
        return sorted(self.model_path.parent.glob(".train-*"))

    def stale_work_folders(self) -> list[Path]:
        """Work folders of trainings whose process has ended (stopped, killed)."""
        out = []
        for work in self.work_folders():
            try:
                pid = int((work / OWNER_FILE).read_text())
            except (OSError, ValueError):
                pid = None
            if pid is None or not _alive(pid):
                out.append(work)
        return out

    def train(self, datalist: str | os.PathLike, max_epochs: int | None = None, from_scratch: bool = False,
              overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Retrain with the bundle's ``train`` workflow and replace ``models/model.pt`` atomically.

        The run writes into a fresh folder beside the model (same file system), so ``model.pt`` is replaced by
        one ``os.replace`` only once training succeeded; the previous model is kept as ``model.previous.pt``.
        A failed run leaves ``model.pt`` as it was.

        Args:
            datalist: a label CSV / JSON datalist the bundle reads (e.g. from :func:`write_label_csv`); without a
                split column it is split patient-disjointly by the bundle's ``split_fractions``.
            max_epochs: epochs (default: the bundle's ``max_epochs``; ``auto``: chosen from the data).
            from_scratch: start from random weights instead of the current ``model.pt``.
            overrides: further top-level bundle values for this run (e.g. ``{"batch_size": 8}``).

        Returns:
            A summary: model name, epochs run, images per split, best validation mean AUC, model path.
        """
        epochs = int(max_epochs) if max_epochs is not None else self.max_epochs
        if epochs != "auto" and epochs < 1:
            raise ValueError(f"max_epochs must be >= 1, got {max_epochs!r}")
        models = self.model_path.parent
        models.mkdir(parents=True, exist_ok=True)
        for stale in self.stale_work_folders():  # left by a stopped or killed training
            shutil.rmtree(stale, ignore_errors=True)
        work = models / f".train-{uuid.uuid4().hex[:8]}"
        work.mkdir()
        (work / OWNER_FILE).write_text(str(os.getpid()))
        t0 = time.perf_counter()
        try:
            start = None if flag(from_scratch, "from_scratch") or not self.is_trained() else str(self.model_path)
            run = {
                "datalist": str(datalist),
                "dataset_dir": str(Path(datalist).resolve().parent),
                "ckpt_dir": str(work),
                "log_dir": str(work / "runs"),
                "output_dir": str(work / "eval"),
                "max_epochs": epochs,
                "resume": False,
                "progress_bar": False,
                "pretrained": start,
                **_data_only(overrides or {}, "training overrides"),
            }
            try:
                wf = self._workflow(self.train_files, "train", **run)
                wf.run()
            except Exception as exc:
                user = user_error(exc)
                if user is not None:
                    raise ValueError(f"{self.name}: training stopped, {self.model_path} unchanged: {user}") from exc
                raise
            data = wf.parser.get_parsed_content("data")
            val = wf.parser.get_parsed_content("validate#evaluator")
            trainer = wf.parser.get_parsed_content("train#trainer")
            wf.finalize()
            new = work / "model.pt"
            if not new.is_file():  # no best checkpoint (e.g. undefined validation AUC): take the last epoch
                last = torch.load(work / "last.pt", map_location="cpu", weights_only=True)
                torch.save(last["network"], new)
            net = wf.parser.get_parsed_content("network_def")
            net.load_state_dict(torch.load(new, map_location="cpu", weights_only=True))  # check before replacing
            if self.model_path.is_file():
                shutil.copy2(self.model_path, models / "model.previous.pt")
            os.replace(new, self.model_path)
            if (work / PLAN_FILE).is_file():  # the recipe it was trained with, beside it
                os.replace(work / PLAN_FILE, models / PLAN_FILE)
            auc = val.state.best_metric if val.state.best_metric != -1 else None
            summary = {
                "model": self.name,
                "epochs": int(trainer.state.epoch),
                "images": {k: len(v) for k, v in data.splits.items()},
                "best_val_mean_auc": None if auc is None or math.isnan(auc) else float(auc),
                "started_from": "scratch" if start is None else "previous model",
                "model_path": str(self.model_path),
                "seconds": round(time.perf_counter() - t0, 2),
            }
            logger.info("retrained %s: %s", self.name, summary)
            return summary
        finally:
            shutil.rmtree(work, ignore_errors=True)

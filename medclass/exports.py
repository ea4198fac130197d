"""Export a trained medclass model file to ONNX, ``torch.export`` (``.pt2``) or TorchScript, with its metadata.

Every exported file computes exactly what the bundle's network returns: **logits** ``(B, num_classes)`` for an
input ``(B, in_channels, *image_size)`` already preprocessed (no activation, no temperature). What a deployment
needs around it travels inside the file as one JSON document (:func:`export_metadata`):

- ONNX: ``metadata_props`` key ``medclass`` (plus ``label_names`` and ``thresholds`` as their own JSON entries, for
  tools that show the properties), read with :func:`read_exported_metadata` or ``onnx.load(f).metadata_props``;
- ``.pt2``: the extra file ``medclass.json`` of :func:`torch.export.save` (``torch.export.load(f, extra_files=
  {"medclass.json": ""})`` fills it in);
- TorchScript: the extra file ``medclass.json`` (``torch.jit.load(f, _extra_files={"medclass.json": ""})``).

The JSON holds the label names, the decision thresholds (on probabilities) and how they were chosen, the
temperature, the activation (``sigmoid`` for multilabel/binary, ``softmax`` for multiclass), the input shape and
the preprocessing (preset, its options, image size; a pretrained start's own preprocessing where recorded).
Probabilities are ``activation(logits / temperature)``; a label is positive where its probability >= threshold.

Each export is checked after writing: the exported file is loaded with its own runtime (ONNX Runtime,
``torch.export.load``, ``torch.jit.load``) and run on the same inputs as the PyTorch model (real images through
the model's preprocessing when given), and the maximum absolute difference of the logits is returned.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medclass import __version__
from medclass.data import find_images
from medclass.networks import Classifier, Ensemble, build_classifier, load_weights, read_state_dict
from medclass.runtime import METADATA_KEY, OnnxModel
from medclass.transforms import build_transforms
from medclass.vocab import TASKS

logger = logging.getLogger(__name__)

__all__ = ["FORMATS", "SUFFIXES", "METADATA_KEY", "ExportResult", "model_from_file", "export_metadata",
           "export_model", "read_exported_metadata", "load_exported", "check_inputs", "max_abs_diff"]

#: export formats, and the file suffix each gets by default
FORMATS: tuple[str, ...] = ("onnx", "pt2", "torchscript")
SUFFIXES = {"onnx": ".onnx", "pt2": ".pt2", "torchscript": ".ts"}
#: the pt2 / TorchScript extra-file name of the metadata (ONNX: the metadata_props key METADATA_KEY)
EXTRA_FILE = METADATA_KEY + ".json"
ONNX_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "image", "logits"
#: the largest |exported - PyTorch| logit difference accepted, relative to max(1, largest |logit|)
TOLERANCE = 1e-3


def check_format(fmt: Any) -> str:
    """The export format in lower case.

    Raises:
        ValueError: not one of :data:`FORMATS`.
    """
    key = str(fmt).lower()
    if key not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
    return key


def model_from_file(path: str | os.PathLike) -> tuple[Classifier | Ensemble, dict[str, Any]]:
    """The classifier a medclass model file (``model.pt``) describes, with its weights, and its metadata.

    The architecture is built from the metadata the file carries (``_extra_state``: arch, spatial dims, channels,
    image size, stem, width, conv, label names, ...), so no config is needed. An ensemble file gives an
    :class:`medclass.networks.Ensemble` whose members are built from their own metadata.

    Returns:
        ``(model in eval mode on CPU, metadata dict)``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not a medclass model file (no metadata), or its weights do not fit the network it describes.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file (a medclass model.pt, e.g. bundles/<name>/models/model.pt "
                                "written by the train workflow)")
    state = read_state_dict(path)
    if "_extra_state" not in state:
        raise ValueError(f"{path}: not a medclass model file (no architecture metadata); export a model.pt written by "
                         "medclass training")
    meta = dict(Classifier.decode_extra_state(state["_extra_state"]))
    info = meta.get("ensemble")
    if isinstance(info, dict):  # an ensemble: each member from its own description (members.<i>._extra_state)
        count = int(info.get("members", 0))
        members = []
        for i in range(count):
            extra = state.get(f"members.{i}._extra_state")
            if extra is None:
                raise ValueError(f"{path}: records an ensemble of {count} members but member {i} is missing")
            members.append(_classifier_from_meta(path, dict(Classifier.decode_extra_state(extra))))
        model = Ensemble(members, task=meta.get("task"), by=str(info.get("by", "seed")))
        model.load_state_dict(state, strict=True)
        return model.eval(), meta
    model = _classifier_from_meta(path, meta)
    load_weights(model, state)
    return model.eval(), meta


def _classifier_from_meta(path: Path, meta: dict[str, Any]) -> Classifier:
    """The (untrained) classifier a model file's metadata describes."""
    missing = [k for k in ("arch", "spatial_dims", "in_channels", "num_classes") if meta.get(k) is None]
    if missing:
        raise ValueError(f"{path}: its metadata lacks {', '.join(missing)}; it was written by an older medclass, "
                         "re-save it with the current one")
    kwargs: dict[str, Any] = dict(meta.get("arch_kwargs") or {})
    if meta.get("patch_size") and str(meta["arch"]).startswith("vit"):
        kwargs.setdefault("patch_size", tuple(meta["patch_size"]))
    for key in ("stem", "width", "conv", "dilate_last_stage"):
        if meta.get(key) is not None:
            kwargs[key] = meta[key]
    if str(meta["arch"]).startswith("vit"):
        kwargs.pop("stem", None)
    return build_classifier(meta["arch"], meta["spatial_dims"], meta["in_channels"], meta["num_classes"],
                            meta.get("image_size"), label_names=meta.get("label_names"), **kwargs)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _agree(name: str, stored: Any, given: Any) -> Any:
    """The model file's value, or the given one where the file has none; both and different is an error."""
    if given is not None and stored is not None and given != stored:
        raise ValueError(f"{name}: the model file says {stored!r}, the request says {given!r}; leave it out (the "
                         "model file is the source of truth)")
    return stored if stored is not None else given


def export_metadata(model: Classifier, meta: dict[str, Any], *, task: str | None = None, preset: str | None = None,
                    preset_options: dict | None = None, source: str | os.PathLike | None = None,
                    fmt: str = "onnx") -> dict[str, Any]:
    """The JSON document an exported file carries (see the module docstring).

    ``task``, ``preset`` and ``preset_options`` fill in what an older model file does not record; a value that
    contradicts the file is an error naming both.
    """
    task = _agree("task", meta.get("task"), task)
    if task is None:
        task = "multiclass" if model.num_classes > 1 and meta.get("activation") == "softmax" else "multilabel"
        logger.warning("the model file does not record its task: assuming %s (give --task to set it)", task)
    if task not in TASKS:
        raise ValueError(f"task {task!r}: use one of {', '.join(TASKS)}")
    preset = _agree("preset", meta.get("preset"), preset)
    options = _agree("preset_options", meta.get("preset_options"), preset_options)
    pretrained = meta.get("pretrained") if isinstance(meta.get("pretrained"), dict) else None
    size = list(model.image_size) if model.image_size is not None else None
    return {
        "format_version": 1,
        "medclass_version": __version__,
        "export_format": fmt,
        "source_model": {"file": Path(source).name, "sha256": _sha256(Path(source))} if source else None,
        "output": OUTPUT_NAME,
        "activation": "softmax" if task == "multiclass" else "sigmoid",
        "task": task,
        "label_names": list(model.label_names),
        "thresholds": [float(t) for t in model.thresholds.tolist()],
        "threshold_provenance": meta.get("operating_points"),
        "temperature": float(model.temperature.reshape(-1)[0]),
        "input": {"name": INPUT_NAME, "shape": ["batch", model.in_channels, *(size or [])], "dtype": "float32"},
        "preprocessing": {"preset": preset, "preset_options": options or {}, "spatial_dims": model.spatial_dims,
                          "image_size": size, "in_channels": model.in_channels,
                          "pretrained": (pretrained or {}).get("preprocessing")},
        "architecture": model.describe(),
        "training_data": meta.get("data_fingerprint"),
    }


def _plain(image: Any) -> torch.Tensor:
    """A plain float tensor (a MONAI MetaTensor's metadata would be pickled into a ``.pt2`` file's example)."""
    as_tensor = getattr(image, "as_tensor", None)
    return (as_tensor() if callable(as_tensor) else torch.as_tensor(image)).float()


def check_inputs(model: Classifier, preprocessing: dict[str, Any], images: Any,
                 max_images: int = 4, seed: int = 0) -> tuple[torch.Tensor, str]:
    """The inputs an export is checked on: up to ``max_images`` real images (a folder, or files) through the model's
    preprocessing, a batch already preprocessed (tensor or array ``(N, C, *image_size)``, e.g. MedMNIST volumes),
    or, without images, random values of the model's input shape.

    Returns:
        ``(batch (N, C, *image_size), description)``.
    """
    size = model.image_size
    if isinstance(images, (torch.Tensor, np.ndarray)):
        batch = torch.as_tensor(np.asarray(images) if isinstance(images, np.ndarray) else images).float()
        if tuple(batch.shape[1:]) != (model.in_channels, *(size or batch.shape[2:])):
            raise ValueError(f"check inputs of shape {tuple(batch.shape)} do not fit the model's input "
                             f"(B, {model.in_channels}, {', '.join(map(str, size or ()))})")
        return batch[:max_images].contiguous(), f"{min(len(batch), max_images)} given inputs"
    if images is not None and not isinstance(images, (str, os.PathLike)):
        images = list(images)
    if images:
        paths: list[str] = []
        for item in [images] if isinstance(images, (str, os.PathLike)) else images:
            if not Path(item).exists():
                raise FileNotFoundError(f"{item}: no such image or folder to check the export on")
            paths += find_images(item) if Path(item).is_dir() else [str(item)]
        paths = paths[:max_images]
        if not paths:
            raise ValueError(f"{images}: no images to check the export on")
        preset = preprocessing.get("preset") or ("cxr" if model.spatial_dims == 2 else "generic")
        tf = build_transforms(preset, model.spatial_dims, size, train=False,
                              options=preprocessing.get("preset_options") or {})
        batch = torch.stack([_plain(tf({"image": p, "id": str(i)})["image"]) for i, p in enumerate(paths)])
        if batch.shape[1] != model.in_channels:
            raise ValueError(f"the preprocessed images have {batch.shape[1]} channels, the model takes "
                             f"{model.in_channels}")
        return batch.contiguous(), f"{len(paths)} images (preset {preset})"
    if size is None:
        raise ValueError("the model file records no image size: give images to check the export on")
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(2, model.in_channels, *size, generator=gen), "2 random inputs"


def _onnx_export(model: Classifier, x: torch.Tensor, out: Path, metadata: dict[str, Any]) -> None:
    import onnx

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        # the TorchScript-based exporter: the dynamo one needs onnxscript, which medclass does not install; both give
        # the same graph for these convolutional networks and ViT
        torch.onnx.export(model, (x,), buf, dynamo=False, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                          opset_version=ONNX_OPSET)
    proto = onnx.load_from_string(buf.getvalue())
    props = {METADATA_KEY: json.dumps(metadata, sort_keys=True), "label_names": json.dumps(metadata["label_names"]),
             "thresholds": json.dumps(metadata["thresholds"])}
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name, proto.doc_string = "medclass", "logits (B, num_classes); metadata_props 'medclass': JSON"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))


def _pt2_export(model: Classifier, x: torch.Tensor, out: Path, metadata: dict[str, Any]) -> None:
    batch = torch.export.Dim("batch", min=1, max=4096)
    ep = torch.export.export(model, (x,), dynamic_shapes={"x": {0: batch}})
    torch.export.save(ep, str(out), extra_files={EXTRA_FILE: json.dumps(metadata, sort_keys=True)})


def _torchscript_export(model: Classifier, out: Path, metadata: dict[str, Any],
                        extra_files: dict[str, str] | None = None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(model)
    torch.jit.save(scripted, str(out),
                   _extra_files={**(extra_files or {}), EXTRA_FILE: json.dumps(metadata, sort_keys=True)})


def read_exported_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The medclass metadata JSON of an exported file (``.onnx``, ``.pt2`` or TorchScript ``.ts``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file carries no medclass metadata or is not an export.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such exported model file")
    text = ""
    if path.suffix == ".onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        text = props.get(METADATA_KEY, "")
    elif path.suffix == ".pt2":
        extra = {EXTRA_FILE: ""}
        torch.export.load(str(path), extra_files=extra)
        text = extra[EXTRA_FILE]
    else:
        extra = {EXTRA_FILE: ""}
        try:
            torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except RuntimeError as exc:
            raise ValueError(f"{path}: not an exported model (.onnx, .pt2 or a TorchScript .ts): {exc}") from exc
        text = extra[EXTRA_FILE]
    if not text:
        raise ValueError(f"{path}: carries no medclass metadata (export it with `medclass export`)")
    return json.loads(text)


def load_exported(path: str | os.PathLike, num_threads: int | None = None):
    """A callable ``(B, C, *size) tensor -> logits tensor`` running an exported file with its own runtime.

    ONNX files run on ONNX Runtime (:class:`medclass.runtime.OnnxModel`), ``.pt2`` files as the module of
    ``torch.export.load``, TorchScript files with ``torch.jit.load``.
    """
    path = Path(path)
    if path.suffix == ".onnx":
        return OnnxModel(path, num_threads=num_threads)
    if path.suffix == ".pt2":
        return torch.export.load(str(path)).module()
    return torch.jit.load(str(path), map_location="cpu")


def max_abs_diff(model: torch.nn.Module, exported, x: torch.Tensor) -> float:
    """Largest absolute difference between the logits of ``model`` and of ``exported`` on ``x`` (both fp32)."""
    with torch.no_grad():
        ref = model.eval()(x).float()
        got = torch.as_tensor(exported(x)).float()
    if got.shape != ref.shape:
        raise ValueError(f"the exported model returns shape {tuple(got.shape)}, PyTorch {tuple(ref.shape)}")
    return float((got - ref).abs().max())


@dataclass
class ExportResult:
    """What :func:`export_model` wrote and how close the exported model is to PyTorch."""

    path: Path
    format: str
    max_abs_diff: float
    checked_on: str
    metadata: dict[str, Any]

    def summary(self) -> str:
        return (f"{self.path} ({self.format}): logits match PyTorch on {self.checked_on}, max abs difference "
                f"{self.max_abs_diff:.3g}; labels {self.metadata['label_names']}, thresholds "
                f"{[round(t, 4) for t in self.metadata['thresholds']]}")


def export_model(model_file: str | os.PathLike, fmt: str = "onnx", out: str | os.PathLike | None = None, *,
                 check_images: Any = None, max_images: int = 4,
                 task: str | None = None, preset: str | None = None, preset_options: dict | None = None,
                 tolerance: float = TOLERANCE, extra_files: dict[str, str] | None = None) -> ExportResult:
    """Export a medclass model file and check the export against the PyTorch model.

    Args:
        model_file: a medclass ``model.pt``.
        fmt: ``onnx``, ``pt2`` or ``torchscript``.
        out: the file to write; default: ``model_file`` with the format's suffix (``.onnx``, ``.pt2``, ``.ts``).
        check_images: images (files or a folder) to compare the outputs on, through the model's preprocessing, or
            a preprocessed batch ``(N, C, *image_size)``; ``None``: random inputs of the model's shape.
        max_images: at most this many of them.
        task, preset, preset_options: for model files that do not record them (a contradicting value is an error).
        tolerance: largest accepted |exported - PyTorch| logit difference, relative to max(1, largest |logit|).
        extra_files: more files stored inside a TorchScript export (name -> text), e.g. the Model Zoo's
            ``metadata.json`` and configs (:func:`medclass.bundle_tools.export_torchscript`).

    Returns:
        An :class:`ExportResult` (the file, the format, the max abs difference, what it was checked on, metadata).

    Raises:
        ValueError: unknown format, not a medclass model file, a contradicting override, or an export whose outputs
            differ from PyTorch beyond ``tolerance``.
        FileNotFoundError: the model file does not exist.
    """
    fmt = check_format(fmt)
    if extra_files and fmt != "torchscript":
        raise ValueError(f"extra files go into TorchScript exports only, not {fmt}")
    model, meta = model_from_file(model_file)
    out = Path(out) if out is not None else Path(model_file).with_suffix(SUFFIXES[fmt])
    if out.resolve() == Path(model_file).resolve():
        raise ValueError(f"{out}: the export would overwrite the model file; give another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    metadata = export_metadata(model, meta, task=task, preset=preset, preset_options=preset_options,
                               source=model_file, fmt=fmt)
    x, described = check_inputs(model, metadata["preprocessing"], check_images, max_images=max_images)
    example = x[:2] if x.shape[0] >= 2 else torch.cat([x, x])  # batch 2: the batch axis stays dynamic
    if fmt == "onnx":
        _onnx_export(model, example, out, metadata)
    elif fmt == "pt2":
        _pt2_export(model, example, out, metadata)
    else:
        _torchscript_export(model, out, metadata, extra_files)
    diff = max_abs_diff(model, load_exported(out), x)
    with torch.no_grad():
        scale = max(1.0, float(model(x).abs().max()))
    if not np.isfinite(diff) or diff > tolerance * scale:
        raise ValueError(f"{out}: the exported model's logits differ from PyTorch's by up to {diff:.3g} on "
                         f"{described} (tolerance {tolerance * scale:.3g})")
    logger.info("exported %s to %s: max abs logit difference %.3g on %s", model_file, out, diff, described)
    return ExportResult(out, fmt, diff, described, metadata)

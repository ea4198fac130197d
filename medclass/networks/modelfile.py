"""The model file is the source of truth for everything that defines a model.

A medclass ``model.pt`` is a plain ``state_dict`` (MONAI's ``CheckpointLoader`` and ``ckpt_export`` read it, and
``torch.load(..., weights_only=True)`` loads it) whose ``_extra_state`` entry is a JSON document written by
:meth:`medclass.networks.Classifier.describe`: the architecture and its arguments, spatial dims, input channels,
image size, label names, the workflow settings (task, preset and its options), the pretrained start and the
preprocessing it needs, the training fingerprint (data digest and every training setting); the evaluate workflow
adds how the thresholds were chosen (``operating_points``). The ``thresholds`` and ``temperature`` buffers sit
beside it.

:func:`read_model_record` reads all of it into one flat dict, from files of any medclass version (what an older
file does not record is listed in ``record["missing"]``). The bundle workflows call :func:`model_settings` to take
the model-defining settings (:data:`medclass.vocab.MODEL_SETTINGS`) from the model file where one exists, and
:func:`check_given` to refuse a command-line value that contradicts it.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from medclass.errors import SettingError
from medclass.networks.checkpoint import read_state_dict
from medclass.networks.classifier import WORKFLOW_SETTINGS, decode_metadata
from medclass.networks.factory import vit_settings
from medclass.networks.spec import (
    MIN_CAM_GRID,
    choose_patch_size,
    choose_stem,
    densenet_feature_size,
    family,
    resnet_feature_size,
)
from medclass.vocab import MODEL_SETTINGS, VIT_SETTINGS, flag, is_auto, optional

logger = logging.getLogger(__name__)

__all__ = ["MODEL_SETTINGS", "check_given", "missing_message", "model_settings", "read_model_record",
           "require", "same_setting"]

_VIT_SIZES = ("hidden_size", "num_heads", "num_layers")
_DEFAULT_WIDTH = 64  # build_classifier's CNN width when none is given


def _settings_from_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The bundle settings a model file's metadata records (format 1 or 2); absent ones are left out."""
    out: dict[str, Any] = {}
    for key in ("label_names", "spatial_dims", "image_size", "in_channels", "arch", "width", "conv",
                "dilate_last_stage", *WORKFLOW_SETTINGS):
        if key in meta and (meta[key] is not None or key in ("width", "image_size")):
            out[key] = meta[key]
    arch = meta.get("arch")
    if arch is None:
        return out
    vit = family(arch) == "vit"
    if "stem" in meta:
        out["stem"] = "auto" if vit else meta["stem"]
    if vit:
        if meta.get("patch_size") is not None:
            out["patch_size"] = list(meta["patch_size"])
        kwargs = meta.get("arch_kwargs")
        if isinstance(kwargs, Mapping):  # format 2: the ViT's sizes as built
            out.update({k: kwargs[k] for k in _VIT_SIZES if k in kwargs})
    else:
        out.update(VIT_SETTINGS)  # not a ViT: its settings are left at their "not given" value
    return out


def read_model_record(path: str | os.PathLike) -> dict[str, Any]:
    """Everything a medclass model file records about its model, as one flat dict.

    Keys: every setting of :data:`MODEL_SETTINGS` the file records (``arch``, ``image_size``, ``label_names``,
    ``task``, ``preset``, ``preset_options``, ...; CNNs' ``width`` / ``stem`` as built, ViTs' ``patch_size`` and
    sizes), and ``path``, ``format`` (0: no metadata, 1: before the workflow settings, 2: this version),
    ``medclass_version``, ``num_classes``, ``thresholds`` (list), ``temperature``, ``operating_points`` (how the
    thresholds were chosen, see :func:`medclass.handlers.store_operating_point`; ``None`` before evaluation),
    ``fingerprint`` (training data digest and settings), ``pretrained`` (the starting weights and the
    preprocessing they need), ``arch_kwargs``, ``dropout``, ``stem_stride``, ``ensemble`` (``None`` for one model;
    for an :class:`medclass.networks.Ensemble`: ``{"members": k, "by": "seed" | "fold", ...}``), and ``missing``: the settings of
    :data:`MODEL_SETTINGS` the file does not record (written by an earlier medclass).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a readable checkpoint, or unreadable metadata.
    """
    p = Path(path).expanduser()
    try:
        st = os.stat(p)
    except OSError:
        st = None
    key = (str(p), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) if st else None
    if key is not None and key in _RECORDS:
        return copy.deepcopy(_RECORDS[key])
    record = _read_record(p)
    if key is not None:  # a workflow start reads it 3 times (settings, ensemble, TTA): one torch.load
        _RECORDS.clear()  # the last file read only: a changed or replaced file has another key
        _RECORDS[key] = copy.deepcopy(record)
    return record


#: the last model file read, by path and file signature (device, inode, size, change times): medclass replaces
#: model files atomically (a new inode), so a rewritten file is never served from here
_RECORDS: dict[tuple, dict[str, Any]] = {}


def _read_record(p: Path) -> dict[str, Any]:
    state = read_state_dict(p)
    extra = state.get("_extra_state")
    meta = decode_metadata(extra) if extra is not None else {}
    record: dict[str, Any] = _settings_from_meta(meta)
    thresholds = state.get("thresholds")
    temperature = state.get("temperature")
    num_classes = meta.get("num_classes")
    if num_classes is None and isinstance(thresholds, torch.Tensor):
        num_classes = int(thresholds.numel())
    record.update({
        "path": str(p),
        "format": int(meta.get("format", 0)) if meta else 0,
        "medclass_version": meta.get("medclass_version"),
        "num_classes": num_classes,
        "thresholds": [float(t) for t in thresholds.flatten()] if isinstance(thresholds, torch.Tensor) else None,
        "temperature": float(temperature.flatten()[0]) if isinstance(temperature, torch.Tensor) else None,
        "operating_points": meta.get("operating_points"),
        "fingerprint": meta.get("fingerprint"),
        "pretrained": meta.get("pretrained"),
        "arch_kwargs": meta.get("arch_kwargs"),
        "dropout": meta.get("dropout"),
        "stem_stride": meta.get("stem_stride"),
        "ensemble": meta.get("ensemble"),
    })
    record["missing"] = [k for k in MODEL_SETTINGS if k not in record]
    return record


def missing_message(record: Mapping[str, Any], keys: list[str]) -> str:
    """One sentence naming the settings an older model file does not record."""
    version = f"medclass {record.get('medclass_version')}" if record.get("medclass_version") else \
        "an earlier medclass"
    return (f"{record.get('path')} was written by {version} and does not record {', '.join(keys)}; give "
            f"{'them' if len(keys) > 1 else 'it'} on the command line as the model was trained "
            f"(e.g. --{keys[0]} ...)")


def require(record: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    """``{key: record[key]}`` for the named settings.

    Raises:
        SettingError: the file does not record some of them (one sentence naming every missing one).
    """
    missing = [k for k in keys if k not in record or k in record.get("missing", ())]
    if missing:
        raise SettingError(missing_message(record, missing))
    return {k: record[k] for k in keys}


def model_settings(model_path: str | os.PathLike | None, new_model: Mapping[str, Any]) -> dict[str, Any]:
    """The model-defining settings a workflow uses: the model file's where ``model_path`` exists, else
    ``new_model`` (the bundle's values for a new model, ``configs/common.yaml``).

    Settings an older model file does not record are taken from ``new_model`` with a warning naming them.

    Returns:
        The settings, with ``model_file`` (the path, or ``None`` when there is no file) and ``missing`` (the
        settings taken from ``new_model`` although a model file exists).
    """
    values = {**VIT_SETTINGS, **dict(new_model)}
    path = Path(str(model_path)).expanduser() if optional(model_path) is not None else None
    if path is None or not path.is_file():
        return {**values, "model_file": None, "missing": []}
    record = read_model_record(path)
    missing = [k for k in record["missing"] if k in values]
    if missing:
        logger.warning("%s; using the bundle's %s", missing_message(record, missing),
                       ", ".join(f"{k}={values[k]!r}" for k in missing))
    out = {**values, **{k: record[k] for k in MODEL_SETTINGS if k in record}}
    logger.info("model settings from %s: %s", path, ", ".join(f"{k}={out[k]!r}" for k in MODEL_SETTINGS
                                                              if k in out and k not in missing))
    return {**out, "model_file": str(path), "missing": missing}


def _size(value: Any, dims: int) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value] * dims
    if isinstance(value, (list, tuple)):
        return [int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for v in value]
    return value


def _resolved(key: str, value: Any, model: Mapping[str, Any]) -> Any:
    """``value`` of setting ``key`` as the network built from ``model``'s other settings would resolve it."""
    value = optional(value)
    arch = str(model.get("arch", "")).lower()
    dims = model.get("spatial_dims") or 2
    size = _size(model.get("image_size"), dims)
    if key == "arch" and isinstance(value, str):
        return value.lower()
    if key == "image_size":
        return _size(value, dims)
    if key == "label_names" and isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if key == "preset_options":
        return dict(value or {})
    if key == "width" and value is None and arch and family(arch) != "vit":
        return _DEFAULT_WIDTH
    if key == "stem" and value == "auto" and arch and family(arch) != "vit":
        return choose_stem(size, dims) if size else "standard"
    if key == "dilate_last_stage":
        if isinstance(value, str) and value.lower() == "auto":
            if not arch or family(arch) == "vit" or not size:
                return False
            feature = densenet_feature_size if family(arch) == "densenet" else resnet_feature_size
            return min(feature(s, model.get("stem") or "standard") for s in size) < MIN_CAM_GRID
        try:
            return flag(value)
        except ValueError:
            return value
    if key == "patch_size":
        if (value is None or (isinstance(value, str) and value.lower() == "auto")) and family(arch or "x") == "vit":
            return list(choose_patch_size(size, dims)) if size else value
        return _size(value, dims) if value is not None else "auto"
    if key in _VIT_SIZES and value is None and arch and family(arch) == "vit":
        return vit_settings(arch).get(key)
    return value


def same_setting(key: str, given: Any, model: Mapping[str, Any]) -> bool:
    """Whether ``given`` (a config / command-line value) means the same model as ``model[key]`` (e.g. ``width:
    null`` and a CNN built with width 64, ``stem: auto`` and the stem it chose, ``"[64, 64]"`` and ``64``)."""
    return _resolved(key, given, model) == _resolved(key, model.get(key), model)


def check_given(model: Mapping[str, Any], given: Mapping[str, Any]) -> None:
    """Refuse a setting whose value contradicts the model file the workflow loads (``auto`` never does: it asks for
    the plan's choice, made when the model was trained and recorded in the file).

    Args:
        model: :func:`model_settings`' result.
        given: the workflow's values of the model-defining settings (the model file's unless the command line,
            or a config layer, set them).

    Raises:
        SettingError: a value differs from the model file's (the message names both).
    """
    source = model.get("model_file")
    if not source:
        return
    for key in MODEL_SETTINGS:
        if key not in given or key not in model or key in model.get("missing", ()):
            continue
        value = given[key]
        if is_auto(value):  # asks for the plan's choice: the one made when the model was trained, recorded here
            continue
        if not same_setting(key, value, model):
            raise SettingError(
                f"setting {key}: {value!r} contradicts {model[key]!r} recorded in the model file {source}, which "
                f"defines the model; leave --{key} out (or train a new model with it)")

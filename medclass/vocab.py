"""The project's shared words, defined once: tasks, split names, label values, config booleans, image file
extensions, decision thresholds and the model inside a DistributedDataParallel wrapper.

Everything in medclass that needs one of these imports it from here (atomic file writes are the other shared
duty: :mod:`medclass.files`). This module imports nothing from medclass and no third-party package but numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "TASKS", "check_task",
    "SPLIT_NAMES", "ALL_SPLIT", "SPLIT_ALIASES", "canonical_split",
    "LABEL_STRINGS", "POSITIVE_WORDS", "NEGATIVE_WORDS", "UNKNOWN_WORDS", "parse_label_value",
    "TRUE_WORDS", "FALSE_WORDS", "flag", "optional", "AUTO", "is_auto",
    "DICOM_SUFFIXES", "NIFTI_SUFFIXES", "ITK_SUFFIXES", "PIL_SUFFIXES", "IMAGE_EXTENSIONS", "is_image_name",
    "DEFAULT_THRESHOLD", "resolve_thresholds", "unwrap_model", "MODEL_SETTINGS", "VIT_SETTINGS",
]

# ------------------------------------------------------------------------------------------- model settings
#: The bundle settings that define a model. Training takes them from the config and records them in the model
#: file; evaluate, inference, saliency, export and the MONAI Label app take them from the model file
#: (:mod:`medclass.networks.modelfile`), and a command-line value contradicting the file is an error.
MODEL_SETTINGS: tuple[str, ...] = (
    "label_names", "task", "spatial_dims", "image_size", "preset", "preset_options", "in_channels", "arch", "width",
    "stem", "conv", "dilate_last_stage", "patch_size", "hidden_size", "num_heads", "num_layers",
)
#: The value that asks the plan (:mod:`medclass.plan`) to choose a setting from the data; in a workflow that loads
#: a model file, the value the plan chose then, which the file records.
AUTO = "auto"


def is_auto(value: Any) -> bool:
    """Whether a setting's value asks the plan to choose it (``"auto"``, any case)."""
    return isinstance(value, str) and value.strip().lower() == AUTO


#: ViT-only settings and their "not given" value (``auto``: derived from the image size; ``null``: the arch's).
VIT_SETTINGS: dict[str, Any] = {"patch_size": "auto", "hidden_size": None, "num_heads": None, "num_layers": None}

# ------------------------------------------------------------------------------------------------------ tasks
#: ``"multilabel"``: C independent sigmoid labels; ``"binary"``: one sigmoid label; ``"multiclass"``: softmax.
TASKS: tuple[str, ...] = ("multilabel", "binary", "multiclass")


def check_task(task: Any, where: str = "task") -> str:
    """``task`` when it is one of :data:`TASKS`.

    Raises:
        ValueError: any other value; the message names ``where``.
    """
    if task not in TASKS:
        raise ValueError(f"{where}: unknown task {task!r}; use one of {', '.join(TASKS)}")
    return task


# ----------------------------------------------------------------------------------------------------- splits
#: Split names of a datalist, in order; a source without a split gives the single split :data:`ALL_SPLIT`.
SPLIT_NAMES: tuple[str, ...] = ("training", "validation", "test")
ALL_SPLIT = "all"
#: The names a datalist, a split folder or a setting may use for each split (matched ignoring case).
SPLIT_ALIASES: dict[str, str] = {
    "train": "training",
    "training": "training",
    "val": "validation",
    "valid": "validation",
    "validation": "validation",
    "test": "test",
    "testing": "test",
    "all": ALL_SPLIT,
}


def canonical_split(name: str, where: str = "split") -> str:
    """Map a split name (train/training, val/valid/validation, test/testing, all; any case) to its canonical form.

    Raises:
        ValueError: an unknown name; the message names ``where``.
    """
    key = str(name).strip().lower()
    if key not in SPLIT_ALIASES:
        raise ValueError(
            f"{where}: unknown split {name!r}; use train/training, val/valid/validation, test or all"
        )
    return SPLIT_ALIASES[key]


# ----------------------------------------------------------------------------------------------- label values
_NAN = float("nan")
#: Label cells as label files hold them (fast path of :func:`parse_label_value`; others go through ``float()``).
LABEL_STRINGS: dict[str, float] = {
    "1": 1.0,
    "0": 0.0,
    "1.0": 1.0,
    "0.0": 0.0,
    "-1": _NAN,
    "-1.0": _NAN,
    "": _NAN,
    "nan": _NAN,
    "NaN": _NAN,
    "NAN": _NAN,
}
#: Words for a label value that people type (``words=True`` of :func:`parse_label_value`; any case).
POSITIVE_WORDS: tuple[str, ...] = ("true", "yes", "positive", "pos")
NEGATIVE_WORDS: tuple[str, ...] = ("false", "no", "negative", "neg")
UNKNOWN_WORDS: tuple[str, ...] = ("none", "null", "unknown", "u")


def parse_label_value(value: Any, where: str, *, words: bool = False) -> float:
    """Parse one label value into 1.0 (positive), 0.0 (negative) or NaN (unknown).

    Always accepted: ``1``, ``0``, ``True``, ``False``, ``1.0``, ``0.0``, numbers as strings (``"1"``, ``" 0.0 "``),
    blank ``""``, ``"nan"``, ``None``, NaN, and ``-1`` / ``"-1"`` (the CheXpert "uncertain" marker, read as
    unknown). With ``words`` (labels people type, e.g. for the label server) also the words of
    :data:`POSITIVE_WORDS`, :data:`NEGATIVE_WORDS` and :data:`UNKNOWN_WORDS`, in any case. Datalists leave
    ``words`` off: a column of yes/no is more likely the wrong column than labels.

    Args:
        value: the raw value (str, int, float, bool, numpy scalar or None).
        where: where the value comes from, used in the error message (e.g. ``"labels.csv row 7, column 'Mass'"``).
        words: accept the yes/no words as well.

    Returns:
        1.0, 0.0 or ``float('nan')``.

    Raises:
        ValueError: any other value; the message names ``where`` and the value.
    """
    if isinstance(value, str):
        hit = LABEL_STRINGS.get(value)
        if hit is not None:
            return hit
        text = value.strip()
        hit = LABEL_STRINGS.get(text)
        if hit is not None:
            return hit
        if words:
            key = text.lower()
            if key in POSITIVE_WORDS:
                return 1.0
            if key in NEGATIVE_WORDS:
                return 0.0
            if key in UNKNOWN_WORDS:
                return _NAN
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"{where}: label value {value!r} {_expected(words)}") from None
    elif value is None:
        return _NAN
    else:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: label value {value!r} ({type(value).__name__}) {_expected(words)}") from None
    if math.isnan(number) or number == -1.0:
        return _NAN
    if number == 1.0:
        return 1.0
    if number == 0.0:
        return 0.0
    raise ValueError(f"{where}: label value {value!r} {_expected(words)}")


def _expected(words: bool) -> str:
    if words:
        return "is not 1/0 (true/false, yes/no, positive/negative), -1 (uncertain) or empty for unknown"
    return "is not one of 1, 0, -1 (uncertain) or blank (unknown)"


# ---------------------------------------------------------------------------------------- config/CLI booleans
TRUE_WORDS: tuple[str, ...] = ("true", "yes", "on", "1")
FALSE_WORDS: tuple[str, ...] = ("false", "no", "off", "0", "none", "null", "")


def optional(value: Any) -> Any:
    """``None`` for a config/CLI "nothing" (None, "none", "null", ""), else the value unchanged."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
        return None
    return value


def flag(value: Any, name: str = "flag") -> bool:
    """A config/CLI boolean: ``--resume false`` reaches the config as the *string* ``"false"`` (truthy).

    Raises:
        ValueError: for anything but a bool, 0/1, None or a true/false-like string.
    """
    if isinstance(value, bool) or value is None:
        return bool(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise ValueError(f"{name} must be true or false, got {value!r}")


# -------------------------------------------------------------------------------------------- image files
#: File name endings read as DICOM (other files are also detected by the ``DICM`` magic).
DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".dic")
#: File name endings read with nibabel.
NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")
#: File name endings read with ITK (MONAI ``ITKReader``): 3D volumes, or 2D images for ``spatial_dims=2``.
ITK_SUFFIXES: tuple[str, ...] = (".nrrd", ".nhdr", ".mha", ".mhd")
#: 2D image files read with PIL (the reader opens any format PIL knows; these are the ones looked for).
PIL_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
#: Every image file a folder is searched for (class folders, inference inputs), matched ignoring case: what the
#: readers of :mod:`medclass.transforms.readers` open. (``.npy`` arrays are read when named, not searched for.)
IMAGE_EXTENSIONS: tuple[str, ...] = PIL_SUFFIXES + DICOM_SUFFIXES + NIFTI_SUFFIXES + ITK_SUFFIXES


def is_image_name(name: str) -> bool:
    """Whether a file name is an image file to pick up: one of :data:`IMAGE_EXTENSIONS` (any case), not hidden."""
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


# ------------------------------------------------------------------------------------------- models/thresholds
#: The decision threshold on a probability where a model stores none.
DEFAULT_THRESHOLD = 0.5


def unwrap_model(network: Any) -> Any:
    """The model inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper; any other module unchanged."""
    return network.module if hasattr(network, "module") else network


def resolve_thresholds(explicit: float | Sequence[float] | None, network: Any,
                       label_names: Sequence[str]) -> np.ndarray:
    """The decision thresholds to use, one per label: ``explicit`` when given (a float or one per label), else the
    ``thresholds`` buffer of the (unwrapped) ``network``, else :data:`DEFAULT_THRESHOLD`.

    Raises:
        ValueError: the thresholds do not number one per label.
    """
    n = len(label_names)
    net = unwrap_model(network) if network is not None else None
    if explicit is not None:
        t = np.broadcast_to(np.asarray(explicit, dtype=np.float64), (n,)).copy()
    elif net is not None and hasattr(net, "thresholds"):
        t = np.asarray(net.thresholds.detach().double().cpu(), dtype=np.float64).reshape(-1)
    else:
        t = np.full(n, DEFAULT_THRESHOLD)
    if t.shape != (n,):
        raise ValueError(f"{len(t)} thresholds for {n} labels ({list(label_names)})")
    return t

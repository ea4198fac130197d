"""Check a bundle's settings before a run starts, so a wrong value stops with one sentence naming the setting.

Every bundle workflow calls :func:`check_settings` in ``initialize`` with its ``settings`` item (the top-level
values of ``configs/common.yaml`` and the workflow file, after command-line overrides). A wrong type, an unknown
choice or a missing file raises :class:`medclass.errors.SettingError`:
``setting max_epochs: expected a whole number >= 1, got 'ten'; set it in configs/common.yaml or on the command
line, e.g. --max_epochs 12``, instead of a traceback from deep inside ignite or torch.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from medclass.data.cache import CACHE_DTYPES, CACHES, parse_bytes
from medclass.engines import PRECISIONS
from medclass.inferers import TTA_MODES
from medclass.errors import SettingError
from medclass.networks.spec import ARCHS, CONVS, STEMS
from medclass.plan import PLANNED, is_auto
from medclass.runs import resume_mode
from medclass.runtime import BACKENDS
from medclass.transforms.augment import AUGMENT_ON
from medclass.transforms.presets import PRESETS
from medclass.vocab import TASKS, flag
from medclass.vocab import optional as none_like
from medclass.workflow import LOADERS

__all__ = ["check_command_line", "check_settings", "CHECKS"]

_FIX = "set it in configs/common.yaml or on the command line"


def _fail(key: str, expected: str, value: Any, example: str) -> SettingError:
    return SettingError(f"setting {key}: expected {expected}, got {value!r}; {_FIX}, e.g. --{key} {example}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def _int(lo: int, example: str, optional: bool = False) -> Callable[[str, Any], None]:
    def check(key: str, v: Any) -> None:
        if optional and none_like(v) is None:  # null, or "null" / "none" as `monai.bundle run` passes it on
            return
        if not _is_int(v) or v < lo:
            raise _fail(key, f"a whole number >= {lo}" + (" or null" if optional else ""), v, example)
    return check


def _number(lo: float, hi: float | None, example: str, lo_open: bool = False, hi_open: bool = False):
    def check(key: str, v: Any) -> None:
        ok = _is_number(v) and (v > lo if lo_open else v >= lo) and (hi is None or (v < hi if hi_open else v <= hi))
        if not ok:
            rng = f"{'>' if lo_open else '>='} {lo}" + (f" and {'<' if hi_open else '<='} {hi}" if hi is not None else "")
            raise _fail(key, f"a number {rng}", v, example)
    return check


def _choice(choices: tuple, example: str | None = None) -> Callable[[str, Any], None]:
    def check(key: str, v: Any) -> None:
        if not (isinstance(v, str) and v.lower() in choices) and v not in choices:
            raise _fail(key, f"one of {', '.join(map(str, choices))}", v, example or str(choices[0]))
    return check


def _bool(example: str = "false") -> Callable[[str, Any], None]:
    def check(key: str, v: Any) -> None:
        try:
            flag(v, key)
        except ValueError:
            raise _fail(key, "true or false", v, example) from None
    return check


def _patch_size(key: str, v: Any) -> None:
    if none_like(v) is None or (isinstance(v, str) and v.lower() == "auto"):
        return
    _image_size(key, v)


def _label_names(key: str, v: Any) -> None:
    if not isinstance(v, (list, tuple)) or not v or not all(isinstance(n, str) and n for n in v):
        raise _fail(key, "a non-empty list of label names", v, "\"['effusion', 'nodule']\"")
    dup = sorted({n for n in v if list(v).count(n) > 1})
    if dup:
        raise SettingError(f"setting {key}: label names {dup} appear more than once; give each label once")


def _image_size(key: str, v: Any) -> None:
    if _is_int(v) and v >= 1:
        return
    if isinstance(v, (list, tuple)) and v and all(_is_int(x) and x >= 1 for x in v):
        return
    raise _fail(key, "a size in pixels/voxels per axis (a list of whole numbers >= 1)", v, "\"[224, 224]\"")


def _fractions(key: str, v: Any) -> None:
    if (isinstance(v, (list, tuple)) and len(v) == 3 and all(_is_number(x) and x >= 0 for x in v)
            and abs(sum(v) - 1.0) < 1e-6):
        return
    raise _fail(key, "three shares (training, validation, test) that add up to 1", v, "\"[0.7, 0.15, 0.15]\"")


def _existing_path(what: str, example: str, optional: bool = True) -> Callable[[str, Any], None]:
    def check(key: str, v: Any) -> None:
        if v is None or (optional and isinstance(v, str) and v.strip().lower() in ("", "none", "null")):
            return
        if not isinstance(v, (str, os.PathLike)):
            raise _fail(key, what, v, example)
        if not Path(v).exists():
            raise SettingError(f"setting {key}: {v} does not exist; give an existing {what} ({_FIX}, e.g. "
                               f"--{key} {example})")
    return check


def _mapping(example: str, optional: bool = True) -> Callable[[str, Any], None]:
    def check(key: str, v: Any) -> None:
        if (optional and v is None) or isinstance(v, Mapping):
            return
        raise _fail(key, "a mapping {key: value, ...}", v, example)
    return check


def _augment(key: str, v: Any) -> None:
    if v is None or isinstance(v, (bool, Mapping)) or (isinstance(v, str) and v.lower() in ("true", "false")):
        return
    raise _fail(key, "a mapping of augmentation options, or false", v, "\"{rotate_deg: 5}\"")


def _dilate(key: str, v: Any) -> None:
    if isinstance(v, bool) or (isinstance(v, str) and v.lower() in ("true", "false", "auto")):
        return
    raise _fail(key, "true, false or auto", v, "auto")


def _memory_budget(key: str, v: Any) -> None:
    try:
        parse_bytes(v)
    except ValueError:
        raise _fail(key, "a size such as 8GB or 512MB, or null", v, "8GB") from None


def _choices() -> dict[str, tuple]:
    return {"arch": ARCHS, "stem": STEMS, "conv": CONVS, "precision": PRECISIONS, "augment_on": AUGMENT_ON,
            "preset": tuple(PRESETS), "cache": CACHES, "cache_dtype": CACHE_DTYPES, "loader": LOADERS,
            "backend": BACKENDS, "tta": ("auto", *TTA_MODES)}


CHECKS: dict[str, Callable[[str, Any], None]] = {
    "datalist": _existing_path("datalist file or folder (CSV, JSON, npz, class folders)", "/data/labels.csv"),
    "label_names": _label_names,
    "task": _choice((*TASKS, None), "multilabel"),
    "spatial_dims": _choice((2, 3), "2"),
    "image_size": _image_size,
    "in_channels": _int(1, "1"),
    "width": _int(1, "32", optional=True),
    "patch_size": _patch_size,
    "hidden_size": _int(1, "384", optional=True),
    "num_heads": _int(1, "6", optional=True),
    "num_layers": _int(1, "8", optional=True),
    "dilate_last_stage": _dilate,
    "preset_options": _mapping("\"{percentiles: [1, 99]}\""),
    "split_fractions": _fractions,
    "split_seed": _int(0, "0"),
    "resplit": _bool(),
    "phantoms": _mapping("\"{n: 600, size: 128, seed: 0}\""),
    "batch_size": _int(1, "32"),
    "num_workers": _int(0, "0"),
    "num_threads": _int(1, "2", optional=True),
    "channels_last": _bool(),
    "max_epochs": _int(1, "12"),
    "learning_rate": _number(0, None, "0.001", lo_open=True),
    "weight_decay": _number(0, None, "0.05"),
    "warmup_epochs": _number(0, None, "1"),
    "label_smoothing": _number(0, 1, "0.1", hi_open=True),
    "pos_weight": _bool("true"),
    "augment": _augment,
    "early_stop_patience": _int(0, "8", optional=True),
    "cache_rate": _number(0, 1, "1.0"),
    "memory_budget": _memory_budget,
    "temperature_scaling": _bool(),
    "mc_dropout": _int(0, "8"),
    "bootstrap_samples": _int(0, "1000"),
    "bootstrap_seed": _int(0, "0"),
    "skip_unreadable": _bool(),
    "missing_files": _choice(("error", "skip"), "skip"),
    "seed": _int(0, "0"),
    "val_interval": _int(1, "1"),
    "ema_epochs": _number(0, None, "1.0"),
    "progress_bar": _bool(),
    "pretrained": _existing_path("checkpoint file", "/path/to/model.pt"),
    "pretrained_skip_head": _bool(),
}


def check_settings(settings: Mapping[str, Any]) -> Mapping[str, Any]:
    """Check every known setting in ``settings``; unknown keys pass, and so does ``auto`` for a setting the
    recipe plan chooses (:data:`medclass.plan.PLANNED`).

    Returns:
        ``settings`` unchanged.

    Raises:
        SettingError: the first wrong setting, naming it, the value, what is expected and an example.
    """
    choices = _choices()
    for key, value in settings.items():
        if key in PLANNED and is_auto(value):  # chosen from the data (medclass.plan); the choice is valid
            continue
        if key in choices:
            _choice(tuple(choices[key]))(key, value)
        elif key in CHECKS:
            CHECKS[key](key, value)
    size, dims = settings.get("image_size"), settings.get("spatial_dims")
    if isinstance(size, (list, tuple)) and dims in (2, 3) and len(size) != dims:
        raise SettingError(f"setting image_size: {list(size)} has {len(size)} values but spatial_dims is {dims}; give "
                           f"one size per axis, e.g. --image_size \"{[size[0]] * dims}\"")
    if "resume" in settings:
        resume_mode(settings["resume"])
    return settings


def check_command_line(settings: Mapping[str, Any], argv: list[str] | None = None) -> None:
    """Stop a ``python -m monai.bundle run`` whose ``--key None`` MONAI dropped.

    That command parses values with ``fire`` (``None`` becomes Python ``None``) and then leaves out every
    ``None``-valued argument (``monai.bundle.update_kwargs(ignore_none=True)``), so ``--width None`` would
    silently keep the config's width. ``--width null`` reaches the config (medclass reads ``"null"`` as null), and
    ``medclass run`` passes ``None`` on.

    Raises:
        SettingError: a ``--key None`` of a setting whose value is not null.
    """
    argv = list(sys.argv if argv is None else argv)
    if not argv or not str(argv[0]).replace("\\", "/").endswith("monai/bundle/__main__.py"):
        return
    for i, arg in enumerate(argv[1:], start=1):
        if not arg.startswith("--"):
            continue
        key, eq, value = arg[2:].partition("=")
        if not eq:
            value = argv[i + 1] if i + 1 < len(argv) else ""
        if value == "None" and key in settings and none_like(settings[key]) is not None:
            raise SettingError(f"setting {key}: python -m monai.bundle run drops --{key} None (MONAI leaves out "
                               f"None values), so {key} stayed {settings[key]!r}; write --{key} null, or use "
                               f"medclass run --{key} None")

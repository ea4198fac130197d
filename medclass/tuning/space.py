"""The search space of ``medclass tune``: which bundle settings a study varies, over which ranges.

A bundle keeps it in ``configs/tune.yaml``, one entry per setting of its ``configs/common.yaml``::

    learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    batch_size: {type: categorical, choices: [16, 32, 64]}
    width: {type: int, low: 16, high: 64, step: 16}
    augment.rotate_deg: {type: float, low: 0.0, high: 15.0}   # one option of the `augment` mapping

The file is data, never code: an entry may not hold MONAI config expressions or references (``$``, ``@``, ``%``,
``#``) or ``_target_``-style keys. Only the settings of :data:`TUNABLE` (and the numeric options of ``augment``)
may be searched, each range is checked against what the setting accepts (:func:`medclass.settings.check_settings`),
and the settings that decide which images are in which split (:data:`SPLIT_SETTINGS`) are refused: a study that
varied them would select its recipe on images another trial tests on.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medclass.errors import SettingError
from medclass.label.safety import config_code
from medclass.plan import is_auto, planned_augment
from medclass.settings import check_settings

__all__ = ["SearchSpace", "Param", "TUNABLE", "AUGMENT_OPTIONS", "SPLIT_SETTINGS", "load_space", "parse_space"]

#: The recipe settings a search may vary (each must be a top-level value of the bundle's ``configs/common.yaml``).
TUNABLE = ("learning_rate", "weight_decay", "batch_size", "width", "label_smoothing", "warmup_epochs", "max_epochs",
           "early_stop_patience", "arch", "stem", "loss_name", "pos_weight", "dilate_last_stage", "num_layers",
           "hidden_size", "num_heads")
#: The numeric options of the ``augment`` mapping a search may vary as ``augment.<option>`` (augmentation strength).
AUGMENT_OPTIONS = {"rotate_deg": (0.0, 180.0), "zoom": (0.0, 1.0), "translate": (0.0, 1.0), "flip_prob": (0.0, 1.0),
                   "prob": (0.0, 1.0), "intensity_scale": (0.0, 1.0), "intensity_shift": (0.0, 1.0)}
#: Settings that decide which images the validation and test splits hold: never searched.
SPLIT_SETTINGS = ("datalist", "dataset_dir", "split_fractions", "split_seed", "resplit", "split_file", "phantoms",
                  "label_names", "task", "missing_files", "skip_unreadable", "items")
_TYPES = {"float": ("low", "high", "log", "step"), "int": ("low", "high", "log", "step"), "categorical": ("choices",)}


@dataclass(frozen=True)
class Param:
    """One searched setting: ``name`` (``learning_rate``, ``augment.rotate_deg``), its type and range."""

    name: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        """The trial's value (an ``optuna.Trial``'s ``suggest_*``)."""
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.name, self.low, self.high, log=self.log, step=self.step or 1)
        return trial.suggest_categorical(self.name, list(self.choices))

    def as_dict(self) -> dict[str, Any]:
        if self.type == "categorical":
            return {"type": self.type, "choices": list(self.choices)}
        out = {"type": self.type, "low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


@dataclass(frozen=True)
class SearchSpace:
    """The searched settings of a study, read from ``source`` (a file, for messages)."""

    params: tuple[Param, ...]
    source: str = "search space"

    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def as_dict(self) -> dict[str, dict]:
        """The space as plain data (what a study records, to check that every worker searches the same)."""
        return {p.name: p.as_dict() for p in self.params}

    def suggest(self, trial) -> dict[str, Any]:
        """``{name: value}`` for every searched setting, drawn by the trial."""
        return {p.name: p.suggest(trial) for p in self.params}

    def overrides(self, values: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
        """The bundle settings for a trial's ``values``: ``augment.<option>`` values go into a copy of the
        ``augment`` mapping of ``base`` (the bundle's values with the fixed command-line settings; for
        ``augment: auto``, the options the plan chooses for ``base["spatial_dims"]``)."""
        out: dict[str, Any] = {}
        for name, value in values.items():
            if "." in name:
                key, option = name.split(".", 1)
                merged = out.get(key)
                if merged is None:  # `augment: auto`: the options the plan stands for, for these dimensions
                    given = base.get(key)
                    merged = planned_augment(base.get("spatial_dims", 2)) if is_auto(given) else dict(given or {})
                merged[option] = value
                out[key] = merged
            else:
                out[name] = value
        return out


def _fail(source: str, key: str, why: str) -> SettingError:
    return SettingError(f"{source}: {key}: {why}")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def _check_value(source: str, name: str, key: str, value: Any, what: str) -> None:
    """``value`` must be a value the setting accepts (the bundle's own check of it)."""
    if "." in name:
        lo, hi = AUGMENT_OPTIONS[name.split(".", 1)[1]]
        if not _number(value) or not lo <= float(value) <= hi:
            raise _fail(source, name, f"{what} {value!r} is not a number in [{lo}, {hi}]")
        return
    try:
        check_settings({key: value})
    except SettingError as exc:
        raise _fail(source, name, f"{what} {value!r} is not a value the setting takes ({exc})") from None


def _param(source: str, name: str, entry: Any, bundle_values: Mapping[str, Any] | None) -> Param:
    if not isinstance(name, str) or not name:
        raise _fail(source, repr(name), "a setting name must be a non-empty string")
    why = config_code(name) or config_code(entry)
    if why:
        raise _fail(source, name, f"{why}; a search space holds plain values only")
    key, _, option = name.partition(".")
    if key in SPLIT_SETTINGS:
        raise _fail(source, name, "decides which images are in the training, validation and test splits; a search "
                                  "may not vary it (tuning never reads the test split): give it as a fixed setting "
                                  f"instead, e.g. --{key} VALUE")
    if option:
        if key != "augment" or option not in AUGMENT_OPTIONS:
            raise _fail(source, name, "only augment.<option> may name an option, with option one of "
                                      + ", ".join(AUGMENT_OPTIONS))
    elif key not in TUNABLE:
        raise _fail(source, name, f"not a setting medclass tune searches; searchable: {', '.join(TUNABLE)}, "
                                  f"augment.<{'|'.join(AUGMENT_OPTIONS)}>")
    if bundle_values is not None:
        if key not in bundle_values:
            raise _fail(source, name, f"the bundle's configs/common.yaml has no {key!r} to tune")
        if option and not isinstance(bundle_values[key], Mapping) and not is_auto(bundle_values[key]):
            raise _fail(source, name, f"the bundle's augment is {bundle_values[key]!r}, not a mapping of options: "
                                      "set augment: {} in configs/common.yaml to tune its options")
    if not isinstance(entry, Mapping):
        raise _fail(source, name, "expected a mapping such as {type: float, low: 0.0001, high: 0.01, log: true}")
    kind = entry.get("type")
    if kind not in _TYPES:
        raise _fail(source, name, f"type must be one of {', '.join(_TYPES)}, got {kind!r}")
    extra = sorted(set(entry) - {"type", *_TYPES[kind]})
    if extra:
        raise _fail(source, name, f"unknown key(s) {extra} for type {kind}; allowed: {', '.join(_TYPES[kind])}")
    if kind == "categorical":
        choices = entry.get("choices")
        if not isinstance(choices, list) or not choices:
            raise _fail(source, name, "choices must be a non-empty list, e.g. choices: [16, 32]")
        for c in choices:
            if c is not None and not isinstance(c, (bool, int, float, str)):
                raise _fail(source, name, f"choice {c!r} is not a number, string, true/false or null")
            _check_value(source, name, key, c, "choice")
        if len({repr(c) for c in choices}) != len(choices):
            raise _fail(source, name, f"choices {choices} repeat a value")
        return Param(name, kind, choices=tuple(choices))
    low, high, log, step = entry.get("low"), entry.get("high"), entry.get("log", False), entry.get("step")
    whole = kind == "int"
    for what, v in (("low", low), ("high", high)):
        if not _number(v) or (whole and not isinstance(v, int)):
            raise _fail(source, name, f"{what} must be a {'whole number' if whole else 'number'}, got {v!r}")
    if not low < high:
        raise _fail(source, name, f"low {low!r} must be below high {high!r}")
    if not isinstance(log, bool):
        raise _fail(source, name, f"log must be true or false, got {log!r}")
    if log and low <= 0:
        raise _fail(source, name, f"a log range needs low > 0, got {low!r}")
    if step is not None:
        if not _number(step) or step <= 0 or (whole and not isinstance(step, int)):
            raise _fail(source, name, f"step must be a positive {'whole ' if whole else ''}number, got {step!r}")
        if log and not (whole and step == 1):
            raise _fail(source, name, "give either log: true or a step, not both")
    if whole and key in ("batch_size", "width", "max_epochs") and low < 1:
        raise _fail(source, name, f"low must be >= 1, got {low!r}")
    for what, v in (("low", low), ("high", high)):
        _check_value(source, name, key, v, what)
    return Param(name, kind, low=float(low) if not whole else int(low), high=float(high) if not whole else int(high),
                 log=log, step=step)


def parse_space(data: Any, source: str = "search space", bundle_values: Mapping[str, Any] | None = None
                ) -> SearchSpace:
    """Check a search space given as data (``{setting: {type: ..., ...}}``) and return it.

    Args:
        data: the parsed YAML.
        source: the file it came from, named in every error.
        bundle_values: the bundle's ``configs/common.yaml`` values; when given, every searched setting must be one.

    Raises:
        SettingError: naming the file and the setting: an unknown or split-deciding setting, a bad type or range,
            a value the setting does not take, or a config expression.
    """
    if not isinstance(data, Mapping) or not data:
        raise SettingError(f"{source}: expected a mapping of settings to ranges, e.g. "
                           "learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}")
    params = tuple(_param(source, name, entry, bundle_values) for name, entry in data.items())
    return SearchSpace(params, source)


def load_space(path: str | os.PathLike, bundle_values: Mapping[str, Any] | None = None) -> SearchSpace:
    """Read and check a search-space YAML file (:func:`parse_space`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: search space not found; write one (see the bundle's configs/tune.yaml) "
                                "or give --space FILE")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SettingError(f"{path}: not valid YAML ({exc})") from None
    return parse_space(data, str(path), bundle_values)

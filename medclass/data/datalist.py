"""The datalist: a dataset's images with their label vectors, ids, patients and splits.

Every item of a :class:`Datalist` is a dict, whatever source it was read from (:mod:`medclass.data.sources`)::

    {"image": str (absolute path) or np.ndarray (MedMNIST),
     "label": np.ndarray float32 (C,)   # 1 positive, 0 negative, NaN unknown; one-hot for multiclass
     "id": str                          # image id for output file names (never a patient id)
     "patient_id": str                  # when the source has one ("" where a row leaves it blank)
     ...}                               # other CSV columns / JSON keys as strings; mask_* as absolute paths

Within one datalist every item has the same keys, so items collate in a ``DataLoader``.
:func:`medclass.data.load_datalist` reads any source into one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medclass.data.labels import normalize_name
from medclass.files import atomic_json
from medclass.vocab import ALL_SPLIT, SPLIT_NAMES, TASKS

__all__ = ["Datalist", "is_one_hot_or_unknown"]


@dataclass(eq=False)
class Datalist:
    """A dataset's items by split, with the label names and the task.

    Args:
        splits: ``{"training": [...], "validation": [...], "test": [...]}`` (any subset of those), or
            ``{"all": [...]}`` when the source has no split. Items as described in the module docstring.
        label_names: the C label (multilabel/binary) or class (multiclass) names, in label-vector order.
        task: ``"multilabel"``, ``"binary"`` (exactly one label) or ``"multiclass"`` (one-hot, C >= 2).
        source: where the datalist came from (file or folder), used in messages.

    Raises:
        ValueError: an unknown task or split name, ``"all"`` mixed with other splits, a binary task with more
            than one label, duplicate label names, an item without image/label/id, a label of the wrong
            length, a multiclass label that is not one-hot (or all NaN), or an id used twice.
    """

    splits: dict[str, list[dict[str, Any]]]
    label_names: list[str]
    task: str
    source: str | None = None

    def __post_init__(self) -> None:
        self.label_names = [str(n) for n in self.label_names]
        self.validate()

    @property
    def num_labels(self) -> int:
        """C: the length of the label vectors (the number of network outputs)."""
        return len(self.label_names)

    def __getitem__(self, split: str) -> list[dict[str, Any]]:
        if split not in self.splits:
            raise KeyError(f"{self.source or 'datalist'} has no split {split!r}; splits: {list(self.splits)}")
        return self.splits[split]

    def __contains__(self, split: object) -> bool:
        return split in self.splits

    def all_items(self) -> list[dict[str, Any]]:
        """Every item of every split, in split order."""
        return [item for items in self.splits.values() for item in items]

    def sizes(self) -> dict[str, int]:
        """Number of items per split."""
        return {name: len(items) for name, items in self.splits.items()}

    def validate(self) -> None:
        """Check the invariants listed in the class docstring (called on construction)."""
        where = self.source or "datalist"
        if self.task not in TASKS:
            raise ValueError(f"{where}: unknown task {self.task!r}; use one of {', '.join(TASKS)}")
        if not self.label_names:
            raise ValueError(f"{where}: no label names")
        keys = [normalize_name(n) for n in self.label_names]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{where}: duplicate label names in {self.label_names}")
        if self.task == "binary" and len(self.label_names) != 1:
            raise ValueError(
                f"{where}: task 'binary' takes exactly one label name, got {len(self.label_names)}: "
                f"{self.label_names} (use 'multilabel' or 'multiclass')"
            )
        if self.task == "multiclass" and len(self.label_names) < 2:
            raise ValueError(f"{where}: task 'multiclass' needs at least 2 classes, got {self.label_names}")
        if not isinstance(self.splits, Mapping) or not self.splits:
            raise ValueError(f"{where}: no splits")
        for name in self.splits:
            if name not in SPLIT_NAMES and name != ALL_SPLIT:
                raise ValueError(f"{where}: unknown split {name!r}; use {', '.join(SPLIT_NAMES)} or {ALL_SPLIT!r}")
        if ALL_SPLIT in self.splits and len(self.splits) > 1:
            raise ValueError(f"{where}: split 'all' cannot be combined with {sorted(set(self.splits) - {ALL_SPLIT})}")
        seen: dict[str, str] = {}
        c = self.num_labels
        for split, items in self.splits.items():
            for k, item in enumerate(items):
                at = f"{where}: {split}[{k}]"
                if not isinstance(item, Mapping):
                    raise TypeError(f"{at} is a {type(item).__name__}, expected a dict")
                for key in ("image", "label", "id"):
                    if key not in item:
                        raise ValueError(f"{at} has no {key!r}")
                label = item["label"]
                if not isinstance(label, np.ndarray) or label.shape != (c,):
                    shape = getattr(label, "shape", type(label).__name__)
                    raise ValueError(
                        f"{at} (id {item['id']!r}): label must be a numpy array of shape ({c},), got {shape}"
                    )
                if self.task == "multiclass" and not is_one_hot_or_unknown(label):
                    raise ValueError(f"{at} (id {item['id']!r}): multiclass label {label.tolist()} is not one-hot")
                image_id = item["id"]
                if image_id in seen:
                    raise ValueError(f"{where}: id {image_id!r} is used twice ({seen[image_id]} and {split}[{k}])")
                seen[image_id] = f"{split}[{k}]"

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write a MONAI-style JSON datalist that :func:`load_datalist` reads back unchanged.

        Labels are written as lists (NaN as ``null``), image paths as absolute paths, with top-level
        ``label_names`` and ``task``.

        Raises:
            TypeError: an item's image is an array (MedMNIST) rather than a path.
        """
        out: dict[str, Any] = {"label_names": self.label_names, "task": self.task}
        for split, items in self.splits.items():
            entries = []
            for k, item in enumerate(items):
                if not isinstance(item["image"], (str, os.PathLike)):
                    raise TypeError(
                        f"{split}[{k}] (id {item['id']!r}): cannot write an in-memory image array to JSON"
                    )
                entry = {key: value for key, value in item.items() if key != "label"}
                entry["image"] = str(item["image"])
                entry["label"] = [None if math.isnan(v) else float(v) for v in item["label"].tolist()]
                entries.append(entry)
            out[split] = entries
        path = Path(path)
        atomic_json(path, out, indent=1)
        return path


def is_one_hot_or_unknown(label: np.ndarray) -> bool:
    """A multi-class label: one-hot (exactly one 1, the rest 0), or all NaN (unknown)."""
    nan = np.isnan(label)
    if nan.all():
        return True
    return bool(not nan.any() and np.isin(label, (0.0, 1.0)).all() and label.sum() == 1.0)

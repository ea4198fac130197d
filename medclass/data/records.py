"""What every datalist source does the same way: image paths resolved against a base folder, unique image ids,
the check that files exist, class values turned into label vectors, task and class names inferred from the values.

The sources of :mod:`medclass.data.sources` build their records with these, so a CSV row, a JSON entry, a class
folder's image and a MedMNIST array end up as items of the same shape (see :mod:`medclass.data.datalist`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medclass.data.labels import normalize_name
from medclass.vocab import check_task, parse_label_value

__all__ = [
    "RESERVED_KEYS", "as_string", "assign_ids", "check_files_exist", "check_optional_task", "class_label_parser",
    "default_task", "file_stem", "infer_classes", "is_mask_key", "resolve_path",
]

#: Item keys every source sets itself (other CSV columns / JSON keys are kept under their own name).
RESERVED_KEYS = ("image", "label", "id", "patient_id")


def file_stem(name: str) -> str:
    """File name without its extension; ``x.nii.gz`` -> ``x``."""
    base = os.path.basename(name)
    lower = base.lower()
    for double in (".nii.gz", ".tar.gz"):
        if lower.endswith(double):
            return base[: -len(double)]
    root, _ = os.path.splitext(base)
    return root or base


def resolve_path(path: str, base: str) -> str:
    """Absolute, normalized path; ``path`` relative to the absolute folder ``base``."""
    if path.startswith("~"):
        path = os.path.expanduser(path)
    joined = path if os.path.isabs(path) else f"{base}{os.sep}{path}"
    if os.sep == "/" and "/." not in joined and "//" not in joined and "\\" not in joined:
        return joined  # already normal: skip normpath (hot for 100k-row CSVs)
    return os.path.normpath(joined)


def assign_ids(
    paths: Sequence[str], explicit: Sequence[str | None], wheres: Sequence[str], source: str
) -> list[str]:
    """One unique id per image: the explicit id, else the file stem, lengthened with parent folder names
    (``AbdomenCT_000000``) where stems collide.

    Raises:
        ValueError: an image listed twice, or an explicit id that is blank, holds a path separator or repeats.
    """
    n = len(paths)
    first_at: dict[str, int] = {}
    for i, p in enumerate(paths):
        if explicit[i] is None:
            if p in first_at:
                raise ValueError(f"{source}: image {p} is listed twice ({wheres[first_at[p]]} and {wheres[i]})")
            first_at[p] = i
    for i, e in enumerate(explicit):
        if e is not None and (not e.strip() or "/" in e or "\\" in e):
            raise ValueError(f"{source}: {wheres[i]}: id {e!r} must be a non-empty name without '/' or '\\'")
    depth = [1] * n
    parts: dict[int, tuple[str, ...]] = {}
    ids = [e if e is not None else file_stem(paths[i]) for i, e in enumerate(explicit)]
    while True:
        groups: dict[str, list[int]] = {}
        for i, image_id in enumerate(ids):
            groups.setdefault(image_id, []).append(i)
        clashes = [members for members in groups.values() if len(members) > 1]
        if not clashes:
            return ids
        for members in clashes:
            grown = False
            for i in members:
                if explicit[i] is not None:
                    continue
                if i not in parts:
                    parts[i] = tuple(q for q in Path(paths[i]).parts if q not in ("/", "\\", ""))
                if depth[i] < len(parts[i]):
                    depth[i] += 1
                    comps = list(parts[i][-depth[i] :])
                    comps[-1] = file_stem(comps[-1])
                    ids[i] = "_".join(c.rstrip(":\\") for c in comps)
                    grown = True
            if not grown:
                listed = ", ".join(wheres[i] for i in members[:5])
                raise ValueError(f"{source}: id {ids[members[0]]!r} is used by more than one image ({listed})")


def check_files_exist(missing: list[tuple[str, str]], source: str, what: str = "image") -> None:
    """Raise ``FileNotFoundError`` naming the first missing files ``[(where, path)]``; nothing when none."""
    if missing:
        shown = "; ".join(f"{where}: {path}" for where, path in missing[:5])
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        hint = ("; check dataset_dir, or set missing_files: skip (--missing_files skip) to leave such rows out"
                if what == "image" else "")
        raise FileNotFoundError(f"{source}: {len(missing)} {what} file(s) not found: {shown}{more}{hint}")


def is_mask_key(key: str) -> bool:
    """A column/key naming a mask file (``mask`` or ``mask_<label>``): read as a path."""
    return key == "mask" or key.startswith("mask_")


def default_task(num_labels: int) -> str:
    """The task of ``num_labels`` label columns or values when none is given."""
    return "binary" if num_labels == 1 else "multilabel"


def check_optional_task(task: str | None, where: str) -> None:
    """A given task must be one of :data:`medclass.vocab.TASKS`; ``None`` (infer it) passes."""
    if task is not None:
        check_task(task, where)


def class_label_parser(
    label_names: Sequence[str], task: str, where_source: str
) -> Callable[[Any, str], np.ndarray]:
    """Parser of one class value (class name, class index, or 0/1 for a binary task) into a label vector."""
    names = list(label_names)
    index = {normalize_name(n): i for i, n in enumerate(names)}
    c = len(names)
    eye = np.eye(c, dtype=np.float32)
    unknown = np.full(c, np.nan, dtype=np.float32)

    def parse(value: Any, where: str) -> np.ndarray:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return unknown.copy()
        if task == "binary":
            if isinstance(value, str) and normalize_name(value) in index:
                return np.ones(1, dtype=np.float32)
            return np.array([parse_label_value(value, where)], dtype=np.float32)
        if isinstance(value, str):
            text = value.strip()
            if not text:
                return unknown.copy()
            i = index.get(normalize_name(text))
            if i is not None:
                return eye[i].copy()
            try:
                value = int(text)
            except ValueError:
                raise ValueError(
                    f"{where}: unknown class {text!r}; valid classes: {', '.join(names)}"
                ) from None
        if isinstance(value, (bool, np.bool_)):
            value = int(value)
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        if isinstance(value, (int, np.integer)):
            if not 0 <= int(value) < c:
                raise ValueError(f"{where}: class index {int(value)} is outside 0..{c - 1} ({', '.join(names)})")
            return eye[int(value)].copy()
        raise ValueError(f"{where}: class {value!r} is neither a class name nor a class index ({', '.join(names)})")

    return parse


def infer_classes(values: Sequence[Any], task: str | None, source: str) -> tuple[list[str], str]:
    """Class names and task from raw class values (names or integer indices)."""
    known = [v for v in values if v is not None and not (isinstance(v, str) and not v.strip())]
    if not known:
        raise ValueError(f"{source}: no label values to infer the label names from; pass label_names")
    ints: list[int] = []
    for v in known:
        if isinstance(v, (bool, np.bool_)):
            ints.append(int(v))
        elif isinstance(v, (int, np.integer)):
            ints.append(int(v))
        elif isinstance(v, (float, np.floating)) and float(v).is_integer():
            ints.append(int(v))
        elif isinstance(v, str) and v.strip().lstrip("-").isdigit():
            ints.append(int(v.strip()))
        else:
            break
    else:
        top = max(ints)
        if min(ints) < 0:
            raise ValueError(f"{source}: negative class index {min(ints)}; pass label_names")
        if task == "binary" or (task is None and top <= 1):
            return ["class_1"], "binary"
        return [f"class_{i}" for i in range(max(top, 1) + 1)], "multiclass"
    if not all(isinstance(v, str) for v in known):
        raise ValueError(f"{source}: labels mix class names and other values; pass label_names")
    return sorted({v.strip() for v in known}), task or "multiclass"


def as_string(value: Any) -> str:
    """A JSON value as the string an item holds (lists and objects as JSON)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)

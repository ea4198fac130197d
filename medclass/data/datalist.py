"""Datalists: the images of a dataset with their label vectors, ids, patients and splits.

:func:`load_datalist` reads a CSV label file, a MONAI-style JSON datalist, a class-per-folder tree or a
MedMNIST ``.npz`` into a :class:`Datalist`. Every item is a dict::

    {"image": str (absolute path) or np.ndarray (MedMNIST),
     "label": np.ndarray float32 (C,)   # 1 positive, 0 negative, NaN unknown; one-hot for multiclass
     "id": str                          # image id for output file names (never a patient id)
     "patient_id": str                  # when the source has one ("" where a row leaves it blank)
     ...}                               # other CSV columns / JSON keys as strings; mask_* as absolute paths

Within one datalist every item has the same keys, so items collate in a ``DataLoader``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medclass.data.labels import CXR14_LABELS, NO_FINDING, FindingsParser, normalize_name
from medclass.data.text import read_text_file
from medclass.files import atomic_json
from medclass.vocab import (
    ALL_SPLIT,
    IMAGE_EXTENSIONS,
    LABEL_STRINGS,
    SPLIT_ALIASES,
    SPLIT_NAMES,
    TASKS,
    canonical_split,
    parse_label_value,
)

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_EXTENSIONS",
    "SPLIT_NAMES",
    "TASKS",
    "Datalist",
    "canonical_split",
    "load_datalist",
]

#: What inference accepts as an image/volume file: the one list of :data:`medclass.vocab.IMAGE_EXTENSIONS`.
READABLE_EXTENSIONS: tuple[str, ...] = IMAGE_EXTENSIONS
_RESERVED_KEYS = ("image", "label", "id", "patient_id")

_IMAGE_COLUMNS = ("image", "path", "Image Index", "filename", "file")
_PATIENT_COLUMNS = ("patient_id", "Patient ID", "patientid", "subject_id")
_FINDINGS_COLUMNS = ("Finding Labels", "finding_labels", "findings")
_CLASS_COLUMNS = ("label", "class")
_CSV_OPTIONS = (
    "image_key",
    "patient_key",
    "findings_key",
    "class_key",
    "split_key",
    "id_key",
    "no_finding",
    "sep",
    "delimiter",
)


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
                if self.task == "multiclass" and not _is_one_hot_or_unknown(label):
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


def _is_one_hot_or_unknown(label: np.ndarray) -> bool:
    nan = np.isnan(label)
    if nan.all():
        return True
    return bool(not nan.any() and np.isin(label, (0.0, 1.0)).all() and label.sum() == 1.0)


# ---------------------------------------------------------------------------------------------------------------
# shared helpers


def _stem(name: str) -> str:
    """File name without its extension; ``x.nii.gz`` -> ``x``."""
    base = os.path.basename(name)
    lower = base.lower()
    for double in (".nii.gz", ".tar.gz"):
        if lower.endswith(double):
            return base[: -len(double)]
    root, _ = os.path.splitext(base)
    return root or base


def _resolve(path: str, base: str) -> str:
    """Absolute, normalized path; ``path`` relative to the absolute folder ``base``."""
    if path.startswith("~"):
        path = os.path.expanduser(path)
    joined = path if os.path.isabs(path) else f"{base}{os.sep}{path}"
    if os.sep == "/" and "/." not in joined and "//" not in joined and "\\" not in joined:
        return joined  # already normal: skip normpath (hot for 100k-row CSVs)
    return os.path.normpath(joined)


def _assign_ids(
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
    ids = [e if e is not None else _stem(paths[i]) for i, e in enumerate(explicit)]
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
                    comps[-1] = _stem(comps[-1])
                    ids[i] = "_".join(c.rstrip(":\\") for c in comps)
                    grown = True
            if not grown:
                listed = ", ".join(wheres[i] for i in members[:5])
                raise ValueError(f"{source}: id {ids[members[0]]!r} is used by more than one image ({listed})")


def _check_files(missing: list[tuple[str, str]], source: str, what: str = "image") -> None:
    if missing:
        shown = "; ".join(f"{where}: {path}" for where, path in missing[:5])
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        hint = ("; check dataset_dir, or set missing_files: skip (--missing_files skip) to leave such rows out"
                if what == "image" else "")
        raise FileNotFoundError(f"{source}: {len(missing)} {what} file(s) not found: {shown}{more}{hint}")


def _is_mask_key(key: str) -> bool:
    return key == "mask" or key.startswith("mask_")


def _default_task(num_labels: int) -> str:
    return "binary" if num_labels == 1 else "multilabel"


def _check_task(task: str | None, where: str) -> None:
    if task is not None and task not in TASKS:
        raise ValueError(f"{where}: unknown task {task!r}; use one of {', '.join(TASKS)}")


def _class_label_parser(
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


def _infer_classes(values: Sequence[Any], task: str | None, source: str) -> tuple[list[str], str]:
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


# ---------------------------------------------------------------------------------------------------------------
# CSV


def _find_column(header_keys: Mapping[str, int], candidates: Sequence[str]) -> int | None:
    for name in candidates:
        i = header_keys.get(normalize_name(name))
        if i is not None:
            return i
    return None


def _load_csv(
    path: Path,
    label_names: Sequence[str] | None,
    task: str | None,
    dataset_dir: Path | None,
    check_files: bool,
    options: Mapping[str, Any],
) -> Datalist:
    source = str(path)
    delimiter = options.get("delimiter") or ("\t" if path.suffix.lower() == ".tsv" else ",")
    with io.StringIO(read_text_file(path), newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            raise ValueError(f"{source}: the CSV file is empty (no header row)") from None
        except csv.Error as exc:
            raise ValueError(f"{source}: not a readable CSV file ({exc})") from None
        rows: list[tuple[int, list[str]]] = []
        try:
            for row in reader:
                if any(row):
                    rows.append((reader.line_num, row))
        except csv.Error as exc:
            raise ValueError(f"{source} row {reader.line_num}: {exc}") from None
    header = [h.strip() for h in header]
    if not any(header):
        raise ValueError(f"{source}: the CSV file has an empty header row")
    if not rows:
        raise ValueError(f"{source}: the CSV file has a header but no data rows")
    keys: dict[str, int] = {}
    for i, name in enumerate(header):
        if not name:
            continue
        key = normalize_name(name)
        if key in keys:
            raise ValueError(f"{source}: column {name!r} appears twice in the header (names match ignoring case)")
        keys[key] = i
    present = ", ".join(repr(h) for h in header if h)

    def column(option: str, candidates: Sequence[str], required: bool = False) -> int | None:
        given = options.get(option)
        if given is not None:
            i = keys.get(normalize_name(given))
            if i is None:
                raise ValueError(f"{source}: no column {given!r} ({option}); columns present: {present}")
            return i
        i = _find_column(keys, candidates)
        if i is None and required:
            raise ValueError(
                f"{source}: no image column (looked for {', '.join(repr(c) for c in candidates)}; pass image_key=); "
                f"columns present: {present}"
            )
        return i

    image_col = column("image_key", _IMAGE_COLUMNS, required=True)
    patient_col = column("patient_key", _PATIENT_COLUMNS)
    split_col = column("split_key", ("split",))
    id_col = column("id_key", ("id",))
    findings_col = column("findings_key", _FINDINGS_COLUMNS)
    class_col = column("class_key", _CLASS_COLUMNS)
    no_finding = options.get("no_finding", NO_FINDING)
    sep = options.get("sep", "|")

    # which columns hold the labels
    mode: str
    label_cols: list[int] = []
    if label_names is not None:
        names = [str(n) for n in label_names]
        if not names:
            raise ValueError(f"{source}: label_names is empty")
        cols = [keys.get(normalize_name(n)) for n in names]
        if options.get("findings_key") is None and options.get("class_key") is None and all(
            c is not None for c in cols
        ):
            mode, label_cols = "columns", [c for c in cols if c is not None]
        elif findings_col is not None and options.get("class_key") is None:
            mode = "findings"
        elif class_col is not None:
            mode = "class"
        else:
            missing = [n for n, c in zip(names, cols) if c is None]
            raise ValueError(
                f"{source}: label names {missing} are not columns of the CSV, and it has no findings column "
                f"({', '.join(repr(c) for c in _FINDINGS_COLUMNS)}); columns present: {present}"
            )
    else:
        paired = [
            h for h in header if h and not _is_mask_key(h) and f"mask_{h}" in header and normalize_name(h) in keys
        ]
        cxr_cols = [keys.get(normalize_name(n)) for n in CXR14_LABELS]
        if options.get("findings_key") is not None:
            mode, names = "findings", list(CXR14_LABELS)
        elif options.get("class_key") is not None:
            mode, names = "class", []
        elif all(c is not None for c in cxr_cols):
            mode, names, label_cols = "columns", list(CXR14_LABELS), [c for c in cxr_cols if c is not None]
        elif findings_col is not None:
            mode, names = "findings", list(CXR14_LABELS)
        elif paired:
            mode, names, label_cols = "columns", paired, [keys[normalize_name(h)] for h in paired]
        elif class_col is not None:
            mode, names = "class", []
        else:
            raise ValueError(
                f"{source}: cannot tell which columns hold the labels (no ChestX-ray14 columns, no findings column, "
                f"no 'label'/'class' column); pass label_names=[...]; columns present: {present}"
            )

    width = len(header)

    for k, (line, row) in enumerate(rows):
        if len(row) > width and any(c.strip() for c in row[width:]):
            raise ValueError(f"{source} row {line}: {len(row)} fields but the header has {width} columns")
        if len(row) < width:  # short rows: the missing trailing cells are blank
            rows[k] = (line, row + [""] * (width - len(row)))

    def cell(row: list[str], i: int | None) -> str:
        return "" if i is None else row[i]

    # the column the labels come from in "findings" and "class" modes
    value_col = findings_col if mode == "findings" else class_col if mode == "class" else None
    value_name = header[value_col] if value_col is not None else ""
    _check_task(task, source)
    if mode == "class":
        if not names:
            names, task_inferred = _infer_classes([cell(r, value_col) for _, r in rows], task, source)
            task = task or task_inferred
        task = task or ("binary" if len(names) == 1 else "multiclass")
    elif task is None:
        task = _default_task(len(names))
    if task == "binary" and len(names) != 1:
        raise ValueError(f"{source}: task 'binary' takes one label, got {len(names)}: {names}")
    if mode == "findings":
        parse_value: Callable[[Any, str], np.ndarray] = FindingsParser(names, no_finding=no_finding, sep=sep)
    else:
        parse_value = _class_label_parser(names, task, source)

    used = {image_col, patient_col, split_col, id_col, *label_cols}
    if mode == "class":
        used.add(value_col)
    extra_cols = [(i, h) for i, h in enumerate(header) if h and i not in used and h not in _RESERVED_KEYS]
    plain_cols = [(i, h) for i, h in extra_cols if not _is_mask_key(h)]
    mask_cols = [(i, h) for i, h in extra_cols if _is_mask_key(h)]
    base = str((dataset_dir if dataset_dir is not None else path.parent).expanduser().resolve())

    splits: dict[str, list[dict[str, Any]]] = {}
    paths: list[str] = []
    explicit: list[str | None] = []
    wheres: list[str] = []
    items: list[dict[str, Any]] = []
    missing: list[tuple[str, str]] = []
    missing_masks: list[tuple[str, str]] = []
    string_values = LABEL_STRINGS
    c = len(names)
    for line, row in rows:
        where = f"{source} row {line}"
        raw_image = row[image_col].strip()
        if not raw_image:
            raise ValueError(f"{where}: empty image path in column {header[image_col]!r}")
        image = _resolve(raw_image, base)
        if mode == "columns":
            label = np.empty(c, dtype=np.float32)
            for k, col in enumerate(label_cols):
                raw = row[col]
                value = string_values.get(raw)
                if value is None:
                    value = parse_label_value(raw, f"{where}, column {header[col]!r}")
                label[k] = value
            if task == "multiclass" and not _is_one_hot_or_unknown(label):
                raise ValueError(f"{where}: multiclass label {label.tolist()} is not one-hot (exactly one 1)")
        else:
            label = parse_value(cell(row, value_col), f"{where}, column {value_name!r}")
        item: dict[str, Any] = {"image": image, "label": label, "id": ""}
        if patient_col is not None:
            item["patient_id"] = row[patient_col].strip()
        for i, h in plain_cols:
            item[h] = row[i]
        for i, h in mask_cols:
            value = row[i].strip()
            if value:
                value = _resolve(value, base)
                if check_files and not os.path.exists(value):
                    missing_masks.append((f"row {line}", value))
            item[h] = value
        if check_files and not os.path.exists(image):
            missing.append((f"row {line}", image))
        split = ALL_SPLIT
        if split_col is not None:
            split = canonical_split(row[split_col], f"{where}, column {header[split_col]!r}")
            if split == ALL_SPLIT:
                raise ValueError(f"{where}: split 'all' in column {header[split_col]!r}; use train, val or test")
        splits.setdefault(split, []).append(item)
        items.append(item)
        paths.append(image)
        explicit.append(cell(row, id_col).strip() if id_col is not None else None)
        wheres.append(f"row {line}")
    _check_files(missing, source)
    _check_files(missing_masks, source, "mask")
    for item, image_id in zip(items, _assign_ids(paths, explicit, wheres, source)):
        item["id"] = image_id
    ordered = {s: splits[s] for s in (*SPLIT_NAMES, ALL_SPLIT) if s in splits}
    datalist = Datalist(ordered, names, task, source=source)
    logger.info("%s: %d images, %d labels (%s), splits %s", source, len(items), c, task, datalist.sizes())
    return datalist


# ---------------------------------------------------------------------------------------------------------------
# JSON


def _load_json(
    data: Mapping[str, Any],
    source: str,
    label_names: Sequence[str] | None,
    task: str | None,
    base: str,
    check_files: bool,
) -> Datalist:
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: the JSON top level must be an object with 'training'/'validation'/'test' lists")
    raw_splits: dict[str, tuple[str, list[Any]]] = {}
    for key, value in data.items():
        canonical = SPLIT_ALIASES.get(str(key).strip().lower())
        if canonical is None:
            if isinstance(value, list) and value and isinstance(value[0], Mapping):
                logger.warning("%s: ignoring top-level list %r (not a split name)", source, key)
            continue
        if not isinstance(value, list):
            raise ValueError(f"{source}: {key!r} must be a list of entries, got {type(value).__name__}")
        if canonical in raw_splits:
            raise ValueError(f"{source}: split {canonical!r} is given twice ({raw_splits[canonical][0]!r} and {key!r})")
        raw_splits[canonical] = (str(key), value)
    if not raw_splits:
        raise ValueError(f"{source}: no 'training', 'validation' or 'test' list found (keys: {list(data)})")
    if ALL_SPLIT in raw_splits and len(raw_splits) > 1:
        raise ValueError(f"{source}: 'all' cannot be combined with other splits")
    if task is None and data.get("task") is not None:
        task = str(data["task"])
    _check_task(task, source)
    if label_names is None:
        top = data.get("label_names", data.get("labels"))
        if isinstance(top, list) and top and all(isinstance(n, str) for n in top):
            label_names = top

    # normalize entries: (where, dict)
    entries: list[tuple[str, str, dict[str, Any]]] = []  # (split, "training[3]", entry)
    for split in (*SPLIT_NAMES, ALL_SPLIT):
        if split not in raw_splits:
            continue
        key, values = raw_splits[split]
        for k, entry in enumerate(values):
            ref = f"{key}[{k}]"
            where = f"{source}: {ref}"
            if isinstance(entry, str):
                entry = {"image": entry}
            if not isinstance(entry, Mapping):
                raise ValueError(f"{where}: an entry must be an object with 'image' (and 'label'), got {entry!r}")
            if "image" not in entry:
                raise ValueError(f"{where}: entry has no 'image' (keys: {sorted(entry)})")
            if not isinstance(entry["image"], str) or not entry["image"].strip():
                raise ValueError(f"{where}: 'image' must be a non-empty path string, got {entry['image']!r}")
            entries.append((split, ref, dict(entry)))

    raw_labels = [e.get("label") for _, _, e in entries]
    known = [v for v in raw_labels if v is not None]
    if label_names is None:
        if not known:
            raise ValueError(f"{source}: no entry has a 'label' to infer the label names from; pass label_names")
        if all(isinstance(v, Mapping) for v in known):
            order: dict[str, None] = {}
            for v in known:
                for name in v:
                    order.setdefault(str(name), None)
            label_names = list(order)
            task = task or _default_task(len(label_names))
        elif all(isinstance(v, (list, tuple)) for v in known):
            length = len(known[0])
            for (_, ref, _e), v in zip(entries, raw_labels):
                if v is not None and len(v) != length:
                    raise ValueError(f"{source}: {ref}: label has {len(v)} values, earlier entries have {length}")
            label_names = [f"class_{i}" for i in range(length)]
            task = task or _default_task(length)
        elif not any(isinstance(v, (Mapping, list, tuple)) for v in known):
            label_names, inferred = _infer_classes(known, task, source)
            task = task or inferred
        else:
            raise ValueError(f"{source}: labels mix lists, objects and single values; pass label_names")
    names = [str(n) for n in label_names]
    c = len(names)
    if task is None:
        if known and not any(isinstance(v, (Mapping, list, tuple)) for v in known) and c > 1:
            task = "multiclass"
        else:
            task = _default_task(c)
    _check_task(task, source)
    index = {normalize_name(n): i for i, n in enumerate(names)}
    class_parser = _class_label_parser(names, task, source)

    def convert(value: Any, where: str) -> np.ndarray:
        if value is None:
            return np.full(c, np.nan, dtype=np.float32)
        if isinstance(value, (list, tuple)):
            if len(value) != c:
                raise ValueError(f"{where}: label has {len(value)} values, expected {c} ({', '.join(names)})")
            vec = np.array([parse_label_value(v, f"{where} label[{i}]") for i, v in enumerate(value)], np.float32)
        elif isinstance(value, Mapping):
            vec = np.full(c, np.nan, dtype=np.float32)
            for name, v in value.items():
                i = index.get(normalize_name(str(name)))
                if i is None:
                    raise ValueError(f"{where}: unknown label {name!r}; valid names: {', '.join(names)}")
                vec[i] = parse_label_value(v, f"{where} label[{name!r}]")
        elif task == "multilabel":
            raise ValueError(
                f"{where}: a single label value {value!r} needs task 'binary' or 'multiclass'; for 'multilabel' "
                f"give a list of {c} values or an object {{name: value}}"
            )
        else:
            return class_parser(value, f"{where} label")
        if task == "multiclass" and not _is_one_hot_or_unknown(vec):
            raise ValueError(f"{where}: multiclass label {vec.tolist()} is not one-hot (exactly one 1)")
        return vec

    extra_keys: dict[str, None] = {}
    for _, _, e in entries:
        for key in e:
            if key not in _RESERVED_KEYS:
                extra_keys.setdefault(str(key), None)
    has_patient = any("patient_id" in e for _, _, e in entries)
    has_id = any("id" in e for _, _, e in entries)

    splits: dict[str, list[dict[str, Any]]] = {}
    paths: list[str] = []
    explicit: list[str | None] = []
    wheres: list[str] = []
    items: list[dict[str, Any]] = []
    missing: list[tuple[str, str]] = []
    missing_masks: list[tuple[str, str]] = []
    for split, ref, entry in entries:
        where = f"{source}: {ref}"
        image = _resolve(entry["image"].strip(), base)
        item: dict[str, Any] = {"image": image, "label": convert(entry.get("label"), where), "id": ""}
        if has_patient:
            item["patient_id"] = _as_string(entry.get("patient_id"))
        for key in extra_keys:
            value = _as_string(entry.get(key))
            if _is_mask_key(key) and value:
                value = _resolve(value, base)
                if check_files and not os.path.exists(value):
                    missing_masks.append((ref, value))
            item[key] = value
        if check_files and not os.path.exists(image):
            missing.append((ref, image))
        splits.setdefault(split, []).append(item)
        items.append(item)
        paths.append(image)
        explicit.append(_as_string(entry["id"]) if has_id and entry.get("id") is not None else None)
        wheres.append(ref)
    _check_files(missing, source)
    _check_files(missing_masks, source, "mask")
    for item, image_id in zip(items, _assign_ids(paths, explicit, wheres, source)):
        item["id"] = image_id
    for split in raw_splits:
        splits.setdefault(split, [])
    ordered = {s: splits[s] for s in (*SPLIT_NAMES, ALL_SPLIT) if s in splits}
    datalist = Datalist(ordered, names, task, source=source)
    logger.info("%s: %d images, %d labels (%s), splits %s", source, len(items), c, task, datalist.sizes())
    return datalist


def _as_string(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


# ---------------------------------------------------------------------------------------------------------------
# class-per-folder tree


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _is_image_file(name: str) -> bool:
    lower = name.lower()
    return not name.startswith(".") and any(lower.endswith(ext) for ext in IMAGE_EXTENSIONS)


def _images_under(folder: Path) -> list[str]:
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(os.path.join(dirpath, f) for f in sorted(filenames) if _is_image_file(f))
    return found


def _load_folder(root: Path, label_names: Sequence[str] | None, task: str | None) -> Datalist:
    source = str(root)
    _check_task(task, source)
    subdirs = _visible_dirs(root)
    if not subdirs:
        raise ValueError(f"{source}: no class folders (expected <root>/<class>/<images> or <root>/<split>/<class>/...)")
    split_dirs: dict[str, Path] = {}
    for d in subdirs:
        canonical = SPLIT_ALIASES.get(d.name.lower())
        if canonical is not None and canonical != ALL_SPLIT:
            if canonical in split_dirs:
                raise ValueError(f"{source}: folders {split_dirs[canonical].name!r} and {d.name!r} are the same split")
            split_dirs[canonical] = d
    if split_dirs:
        others = [d.name for d in subdirs if d not in split_dirs.values()]
        if others:
            raise ValueError(
                f"{source}: holds split folders ({', '.join(d.name for d in split_dirs.values())}) and also "
                f"{others}, which are not splits (train/training, val/valid/validation, test)"
            )
        layout = {s: split_dirs[s] for s in SPLIT_NAMES if s in split_dirs}
    else:
        layout = {ALL_SPLIT: root}

    found: dict[str, dict[str, list[str]]] = {}
    for split, folder in layout.items():
        classes = _visible_dirs(folder)
        if not classes:
            raise ValueError(f"{folder}: no class folders in this split folder")
        found[split] = {}
        for class_dir in classes:
            images = _images_under(class_dir)
            if not images:
                raise ValueError(
                    f"{class_dir}: class folder holds no images ({', '.join(IMAGE_EXTENSIONS)})"
                )
            found[split][class_dir.name] = images
    folder_names = sorted({name for per in found.values() for name in per})

    if task == "binary":
        if len(folder_names) != 2:
            raise ValueError(f"{source}: task 'binary' needs exactly 2 class folders, found {folder_names}")
        if label_names is None:
            label_names = [folder_names[1]]
        if len(label_names) != 1 or label_names[0] not in folder_names:
            raise ValueError(
                f"{source}: for task 'binary' give label_names=[<the positive class folder>], one of {folder_names}"
            )
        names = [str(label_names[0])]
        vectors = {n: np.array([1.0 if n == names[0] else 0.0], np.float32) for n in folder_names}
    else:
        if task not in (None, "multiclass"):
            raise ValueError(f"{source}: a class-per-folder tree is 'multiclass' (or 'binary'), not {task!r}")
        task = "multiclass"
        names = [str(n) for n in label_names] if label_names is not None else folder_names
        lookup = {normalize_name(n): i for i, n in enumerate(names)}
        eye = np.eye(len(names), dtype=np.float32)
        vectors = {}
        for n in folder_names:
            i = lookup.get(normalize_name(n))
            if i is None:
                raise ValueError(f"{source}: class folder {n!r} is not among label_names {names}")
            vectors[n] = eye[i]
        absent = [n for n in names if normalize_name(n) not in {normalize_name(f) for f in folder_names}]
        if absent:
            logger.warning("%s: no folder for classes %s", source, absent)
    task = task or "multiclass"

    splits: dict[str, list[dict[str, Any]]] = {}
    items: list[dict[str, Any]] = []
    paths: list[str] = []
    for split, per_class in found.items():
        splits[split] = []
        for class_name in sorted(per_class):
            for image in per_class[class_name]:
                item = {"image": os.path.abspath(image), "label": vectors[class_name].copy(), "id": ""}
                splits[split].append(item)
                items.append(item)
                paths.append(item["image"])
    ids = _assign_ids(paths, [None] * len(paths), paths, source)
    for item, image_id in zip(items, ids):
        item["id"] = image_id
    datalist = Datalist(splits, names, task, source=source)
    logger.info("%s: %d images in %d classes, splits %s", source, len(items), len(folder_names), datalist.sizes())
    return datalist


# ---------------------------------------------------------------------------------------------------------------
# entry point


def load_datalist(
    source: str | os.PathLike | Mapping[str, Any] | Datalist,
    label_names: Sequence[str] | None = None,
    *,
    task: str | None = None,
    dataset_dir: str | os.PathLike | None = None,
    check_files: bool = True,
    **column_options: Any,
) -> Datalist:
    """Read a dataset description into a :class:`Datalist`.

    Sources (chosen by what ``source`` is):

    * ``*.csv`` / ``*.tsv``: one row per image. Image column: ``image_key`` or the first of ``image``,
      ``path``, ``Image Index``, ``filename``, ``file``. Labels: one 1/0/-1/blank column per name in
      ``label_names``; or a findings column (``Finding Labels``, ``finding_labels``, ``findings``;
      ``findings_key``) holding ``|``-separated names, ``No Finding`` = all 0 (ChestX-ray14
      ``Data_Entry_2017.csv``); or a class column (``label``/``class``; ``class_key``) holding class names or
      indices (multiclass). Without ``label_names``: the 14 ChestX-ray14 columns if all present, else the
      findings column (ChestX-ray14 labels), else the columns ``X`` that have a ``mask_X`` companion
      (phantoms), else the class column. Patient column: ``patient_id``/``Patient ID`` (``patient_key``).
      Split column ``split`` (``split_key``) with train/training, val/valid/validation, test. ``id`` column
      (``id_key``) if present, else the file stem. Other columns are kept as strings under their header
      name; ``mask``/``mask_*`` columns become absolute paths. Row numbers in messages count the header as
      row 1, as a spreadsheet shows them.
    * ``*.json`` (or an already-parsed dict): ``{"training": [{"image": ..., "label": ...}], "validation": [...],
      "test": [...]}``; label as a list (``null`` = unknown), ``{name: value}``, a class index or a class
      name; optional top-level ``label_names`` and ``task``.
    * a folder: ``<root>/<class>/<images>`` or ``<root>/<split>/<class>/<images>`` (multiclass; label names
      are the sorted folder names). ``task="binary"`` with two class folders gives one label, positive for
      ``label_names[0]`` (default: the later folder name, e.g. ``1_abnormal``).
    * ``*.npz``: MedMNIST v2, see :func:`medclass.data.medmnist.load_medmnist`.

    Args:
        source: the file or folder, or a parsed JSON datalist (a :class:`Datalist` is returned as is).
        label_names: the labels/classes and their order in the label vector; inferred when omitted.
        task: ``"multilabel"``, ``"binary"`` or ``"multiclass"``; inferred when omitted (one label: binary;
            several label columns/findings: multilabel; class names/indices: multiclass).
        dataset_dir: folder that relative image paths start from (default: the CSV's/JSON's folder; the
            working directory for a dict).
        check_files: check up front that every image (and mask) file exists (CSV/JSON).
        **column_options: CSV only: ``image_key``, ``patient_key``, ``findings_key``, ``class_key``,
            ``split_key``, ``id_key`` (column names), ``no_finding`` (default ``"No Finding"``), ``sep``
            (default ``"|"``), ``delimiter`` (default ``","``, tab for ``.tsv``).

    Returns:
        The datalist; splits in the order training, validation, test, or the single split ``"all"``.

    Raises:
        FileNotFoundError: the source, or (with ``check_files``) an image or mask file, is missing; the
            message names the file and the row/entry.
        ValueError: an unreadable or empty source, a missing image column, unknown label names, a bad label
            value, an unknown split; the message names the file, the row or entry, and the problem.
        TypeError: an option that does not apply to this source.
    """
    if isinstance(source, Datalist):
        return source
    unknown = sorted(set(column_options) - set(_CSV_OPTIONS))
    if unknown:
        raise TypeError(f"load_datalist: unknown option(s) {unknown}; CSV options are {', '.join(_CSV_OPTIONS)}")
    ddir = Path(dataset_dir).expanduser() if dataset_dir is not None else None
    # dataset_dir is the base of relative image paths in CSV/JSON lists; folders and npz files hold their images
    needs_ddir = isinstance(source, Mapping) or Path(source).suffix.lower() in (".csv", ".tsv", ".json")
    if needs_ddir and ddir is not None and not ddir.is_dir():
        raise FileNotFoundError(f"dataset_dir {ddir} is not a folder")
    if isinstance(source, Mapping):
        if column_options:
            raise TypeError(f"load_datalist: options {sorted(column_options)} apply to CSV files only")
        base = str((ddir or Path.cwd()).resolve())
        return _load_json(source, "datalist dict", label_names, task, base, check_files)
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"datalist source {path} does not exist")
    if path.is_dir():
        if column_options:
            raise TypeError(f"load_datalist: options {sorted(column_options)} apply to CSV files only")
        return _load_folder(path, label_names, task)
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return _load_csv(path, label_names, task, ddir, check_files, column_options)
    if column_options:
        raise TypeError(f"load_datalist: options {sorted(column_options)} apply to CSV files only")
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: not a UTF-8 text file ({exc})") from None
        base = str((ddir or path.parent).resolve())
        return _load_json(data, str(path), label_names, task, base, check_files)
    if suffix == ".npz":
        from medclass.data.medmnist import load_medmnist  # medmnist imports Datalist from this module

        return load_medmnist(path, label_names, task=task)
    raise ValueError(f"{path}: unsupported datalist source; use a .csv, .tsv, .json, .npz file or a class folder tree")


def load_image_list(
    source: str | os.PathLike,
    *,
    dataset_dir: str | os.PathLike | None = None,
    check_files: bool = True,
    image_key: str | None = None,
) -> list[dict[str, Any]]:
    """Images to predict on, without labels: ``[{"image": path or array, "id": str}, ...]``.

    Args:
        source: a CSV/TSV with an image column (as for :func:`load_datalist`; label columns are ignored), a
            MONAI-style JSON datalist (every split's entries, or a plain list of entries/paths), or a MedMNIST
            ``.npz`` (every split).
        dataset_dir: folder relative paths start from (default: the file's folder).
        check_files: check up front that every image exists.
        image_key: the CSV column or JSON key holding the image (default: the usual candidates).

    Raises:
        FileNotFoundError: the source or an image is missing (naming the row/entry).
        ValueError: no image column, or no image listed.
    """
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path}: image list not found")
    base = str(Path(dataset_dir).resolve()) if dataset_dir is not None else str(path.resolve().parent)
    name = path.name.lower()
    if name.endswith(".npz"):
        from medclass.data.medmnist import load_medmnist

        return [{"image": it["image"], "id": it["id"]} for split in load_medmnist(path).splits.values() for it in split]
    entries: list[tuple[str, str | None, str]] = []  # (image, explicit id, where)
    if name.endswith(".json"):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read JSON ({exc})") from exc
        groups = doc.items() if isinstance(doc, dict) else [("entries", doc)]
        for split, items in groups:
            if not isinstance(items, list):
                continue
            for i, it in enumerate(items):
                where = f"{split}[{i}]"
                image = it if isinstance(it, str) else it.get(image_key or "image") if isinstance(it, dict) else None
                if not isinstance(image, str):
                    raise ValueError(f"{path}: {where}: no image path")
                entries.append((image, it.get("id") if isinstance(it, dict) else None, where))
    else:
        delimiter = "\t" if name.endswith(".tsv") else ","
        with io.StringIO(read_text_file(path), newline="") as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, None)
            if not header:
                raise ValueError(f"{path}: empty CSV")
            keys = {normalize_name(h): i for i, h in enumerate(header)}
            col = _find_column(keys, [image_key] if image_key else _IMAGE_COLUMNS)
            if col is None:
                raise ValueError(f"{path}: no image column ({', '.join(_IMAGE_COLUMNS)}); columns present: {header}")
            id_col = keys.get(normalize_name("id"))
            for row_no, row in enumerate(reader, start=2):
                if not row or not any(c.strip() for c in row):
                    continue
                explicit = row[id_col].strip() if id_col is not None and id_col < len(row) and row[id_col].strip() else None
                entries.append((row[col].strip(), explicit, f"row {row_no}"))
    if not entries:
        raise ValueError(f"{path}: lists no image")
    paths = [_resolve(image, base) for image, _, _ in entries]
    if check_files:
        _check_files([(where, p) for p, (_, _, where) in zip(paths, entries) if not os.path.exists(p)], str(path))
    ids = _assign_ids(paths, [e for _, e, _ in entries], [w for _, _, w in entries], str(path))
    return [{"image": p, "id": i} for p, i in zip(paths, ids)]


def items_from_paths(paths: Sequence[str | os.PathLike], source: str = "inputs") -> list[dict[str, Any]]:
    """``[{"image": path, "id": ...}]`` for files or study folders, with unique ids (file stems, lengthened by
    parent folder names where stems collide).

    Raises:
        FileNotFoundError: a path does not exist (named).
        ValueError: a path is listed twice.
    """
    resolved = [str(Path(p)) for p in paths]
    _check_files([(f"item {i}", p) for i, p in enumerate(resolved) if not os.path.exists(p)], source, "input")
    ids = _assign_ids(resolved, [None] * len(resolved), [f"item {i}" for i in range(len(resolved))], source)
    return [{"image": p, "id": i} for p, i in zip(resolved, ids)]

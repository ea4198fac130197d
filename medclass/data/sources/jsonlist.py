"""MONAI-style JSON datalists: ``{"training": [{"image": ..., "label": ...}], "validation": [...], "test": [...]}``
(``train``/``val``/... spellings accepted), with optional top-level ``label_names`` and ``task``."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medclass.data.datalist import Datalist, is_one_hot_or_unknown
from medclass.data.labels import normalize_name
from medclass.data.records import (
    RESERVED_KEYS,
    as_string,
    assign_ids,
    check_files_exist,
    check_optional_task,
    class_label_parser,
    default_task,
    infer_classes,
    is_mask_key,
    resolve_path,
)
from medclass.data.sources.base import DatalistSource
from medclass.data.sources.table import image_items
from medclass.vocab import ALL_SPLIT, SPLIT_ALIASES, SPLIT_NAMES, parse_label_value

logger = logging.getLogger(__name__)

__all__ = ["JsonSource", "read_json_datalist"]


class JsonSource(DatalistSource):
    """A MONAI-style JSON datalist file, or an already-parsed document (a dict).

    Entries: ``{"image": path, "label": ...}`` or a bare path; label as a list (``null`` = unknown),
    ``{name: value}``, a class index or a class name. Other keys are kept (as strings; ``mask``/``mask_*`` as absolute
    paths); ``patient_id`` and ``id`` are used where given. Relative paths start from ``dataset_dir``, else the
    file's folder (the working directory for a dict).
    """

    kind = "JSON"
    suffixes = (".json",)

    @property
    def source(self) -> str:
        return "datalist dict" if isinstance(self.location, Mapping) else str(self.location)

    def base(self) -> str:
        if isinstance(self.location, Mapping):
            return str((self.dataset_dir or Path.cwd()).resolve())
        return super().base()

    def document(self) -> Any:
        """The parsed JSON.

        Raises:
            ValueError: not valid JSON, or not UTF-8 text.
        """
        if isinstance(self.location, Mapping):
            return self.location
        path = self.location
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: not a UTF-8 text file ({exc})") from None

    def read(self, label_names: Sequence[str] | None = None, task: str | None = None) -> Datalist:
        return read_json_datalist(self.document(), self.source, label_names, task, self.base(), self.check_files)

    def images(self, image_key: str | None = None) -> list[dict[str, Any]]:
        """Every split's entries (any top-level list of entries or paths, or a plain list), labels ignored."""
        path = self.location
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read JSON ({exc})") from exc
        groups = doc.items() if isinstance(doc, dict) else [("entries", doc)]
        entries: list[tuple[str, str | None, str]] = []
        for split, items in groups:
            if not isinstance(items, list):
                continue
            for i, it in enumerate(items):
                where = f"{split}[{i}]"
                image = it if isinstance(it, str) else it.get(image_key or "image") if isinstance(it, dict) else None
                if not isinstance(image, str):
                    raise ValueError(f"{path}: {where}: no image path")
                entries.append((image, it.get("id") if isinstance(it, dict) else None, where))
        return image_items(entries, self.list_base(), self.check_files, str(path))


def read_json_datalist(
    data: Mapping[str, Any],
    source: str,
    label_names: Sequence[str] | None,
    task: str | None,
    base: str,
    check_files: bool,
) -> Datalist:
    """The records of a MONAI-style JSON datalist ``data`` (see :class:`JsonSource`); ``base`` is the absolute folder
    relative image paths start from."""
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
    check_optional_task(task, source)
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
            task = task or default_task(len(label_names))
        elif all(isinstance(v, (list, tuple)) for v in known):
            length = len(known[0])
            for (_, ref, _e), v in zip(entries, raw_labels):
                if v is not None and len(v) != length:
                    raise ValueError(f"{source}: {ref}: label has {len(v)} values, earlier entries have {length}")
            label_names = [f"class_{i}" for i in range(length)]
            task = task or default_task(length)
        elif not any(isinstance(v, (Mapping, list, tuple)) for v in known):
            label_names, inferred = infer_classes(known, task, source)
            task = task or inferred
        else:
            raise ValueError(f"{source}: labels mix lists, objects and single values; pass label_names")
    names = [str(n) for n in label_names]
    c = len(names)
    if task is None:
        if known and not any(isinstance(v, (Mapping, list, tuple)) for v in known) and c > 1:
            task = "multiclass"
        else:
            task = default_task(c)
    check_optional_task(task, source)
    index = {normalize_name(n): i for i, n in enumerate(names)}
    class_parser = class_label_parser(names, task, source)

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
        if task == "multiclass" and not is_one_hot_or_unknown(vec):
            raise ValueError(f"{where}: multiclass label {vec.tolist()} is not one-hot (exactly one 1)")
        return vec

    extra_keys: dict[str, None] = {}
    for _, _, e in entries:
        for key in e:
            if key not in RESERVED_KEYS:
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
        image = resolve_path(entry["image"].strip(), base)
        item: dict[str, Any] = {"image": image, "label": convert(entry.get("label"), where), "id": ""}
        if has_patient:
            item["patient_id"] = as_string(entry.get("patient_id"))
        for key in extra_keys:
            value = as_string(entry.get(key))
            if is_mask_key(key) and value:
                value = resolve_path(value, base)
                if check_files and not os.path.exists(value):
                    missing_masks.append((ref, value))
            item[key] = value
        if check_files and not os.path.exists(image):
            missing.append((ref, image))
        splits.setdefault(split, []).append(item)
        items.append(item)
        paths.append(image)
        explicit.append(as_string(entry["id"]) if has_id and entry.get("id") is not None else None)
        wheres.append(ref)
    check_files_exist(missing, source)
    check_files_exist(missing_masks, source, "mask")
    for item, image_id in zip(items, assign_ids(paths, explicit, wheres, source)):
        item["id"] = image_id
    for split in raw_splits:
        splits.setdefault(split, [])
    ordered = {s: splits[s] for s in (*SPLIT_NAMES, ALL_SPLIT) if s in splits}
    datalist = Datalist(ordered, names, task, source=source)
    logger.info("%s: %d images, %d labels (%s), splits %s", source, len(items), c, task, datalist.sizes())
    return datalist

"""Images and datalist rows a run leaves out when asked to (``skip_unreadable``, ``missing_files: skip``).

By default a run stops at the first unreadable, empty, constant (blank) or non-finite image, and at datalist
rows whose file is absent, with an error naming the file. With ``skip_unreadable: true`` / ``missing_files:
skip`` those are left out instead: every one is listed in ``skipped.csv`` (``file``, ``id``, ``reason``) next to
the run's outputs, and the log says how many and, for datalist rows, how many positives of each label were lost.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medclass.data.datalist import Datalist
from medclass.errors import UnreadableImageError
from medclass.files import atomic_write
from medclass.vocab import flag

logger = logging.getLogger(__name__)

__all__ = ["SkipList", "MISSING_FILES", "check_image_content", "screen_items", "drop_missing_files"]

MISSING_FILES = ("error", "skip")
HEADER = ("file", "id", "reason")


class SkipList:
    """The items a run left out, written to ``path`` as CSV (``file``, ``id``, ``reason``).

    Rows are kept in memory until :meth:`activate` (called once the run holds its output folder); from then on
    the file is rewritten (atomically) whenever a row is added. A run that skips nothing removes a
    ``skipped.csv`` an earlier run left there, so the file always describes the latest run.

    Args:
        path: the CSV file, or ``None`` to keep the rows in memory only.
    """

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path else None
        self.rows: list[tuple[str, str, str]] = []
        self.active = False

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, file: Any, item_id: Any, reason: str) -> None:
        """Record one left-out item."""
        self.rows.append((str(file), "" if item_id is None else str(item_id), " ".join(str(reason).split())))
        if self.active:
            self.write()

    def extend(self, rows: Sequence[tuple[Any, Any, str]]) -> None:
        for file, item_id, reason in rows:
            self.rows.append((str(file), "" if item_id is None else str(item_id), " ".join(str(reason).split())))
        if self.active:
            self.write()

    def activate(self) -> None:
        """Start writing the file (the run now owns its folder)."""
        self.active = True
        self.write()

    def write(self) -> None:
        if self.path is None:
            return
        if not self.rows:
            if self.path.exists():
                self.path.unlink()
            return
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(HEADER)
        w.writerows(self.rows)
        with atomic_write(self.path, newline="") as f:
            f.write(buf.getvalue())


def check_image_content(image: Any, name: str) -> None:
    """Raise :class:`UnreadableImageError` naming ``name`` when the image is empty, constant or non-finite."""
    arr = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image)
    if arr.size == 0:
        raise UnreadableImageError(f"{name}: empty image (shape {tuple(arr.shape)})")
    finite = np.isfinite(arr)
    if not finite.all():
        raise UnreadableImageError(f"{name}: {int((~finite).sum())} NaN/Inf pixel value(s)")
    lo, hi = float(arr.min()), float(arr.max())
    if lo == hi:
        raise UnreadableImageError(
            f"{name}: blank image (every pixel is {lo:g}); remove it from the data, or set skip_unreadable: true "
            "to leave such images out")


def _name(item: dict, key: str) -> str:
    src = item.get(key)
    return str(src) if isinstance(src, (str, os.PathLike)) else str(item.get("id", "<array>"))


def screen_items(items: Sequence[dict], reader: Callable[[dict], Any] | None, skip: Any = False,
                 skipped: SkipList | None = None, key: str = "image", what: str = "images") -> list[dict]:
    """With ``skip``, read every item once and leave out those that cannot be read or are empty, constant or
    non-finite (recorded in ``skipped``); without it, return ``items`` unchanged (the run then stops at the
    first bad image, naming it).

    Args:
        items: datalist items.
        reader: reads one item (the preset's first transform, :class:`medclass.transforms.ReadImaged`, or the
            whole preprocessing); ``None`` uses it from :func:`medclass.transforms.build_transforms`.
        skip: ``skip_unreadable``.
        skipped: where to record the left-out items.
        key: the image key.
        what: what the items are, for the log.

    Raises:
        UnreadableImageError: every item was unreadable.
    """
    items = list(items)
    if not flag(skip, "skip_unreadable") or not items:
        return items
    if hasattr(reader, "transforms"):  # a Compose: reading is its first step
        reader = reader.transforms[0]
    kept, rows = [], []
    for it in items:
        name = _name(it, key)
        try:
            out = reader(dict(it)) if reader is not None else it
            check_image_content(out[key], name)
        except (ValueError, TypeError, OSError, RuntimeError) as exc:
            reason = str(exc)
            if reason.startswith(name + ": "):
                reason = reason[len(name) + 2:]
            rows.append((name, it.get("id"), reason))
            continue
        kept.append(it)
    if rows:
        if skipped is not None:
            skipped.extend(rows)
        where = f" (listed in {skipped.path})" if skipped is not None and skipped.path else ""
        logger.warning("skip_unreadable: left out %d of %d %s that cannot be read or are empty, blank or "
                       "non-finite%s", len(rows), len(items), what, where)
    if not kept:
        raise UnreadableImageError(f"none of the {len(items)} {what} could be read (first: {rows[0][0]}: "
                                   f"{rows[0][2]})")
    return kept


def drop_missing_files(data: Any, skipped: SkipList | None = None, source: str = "datalist") -> Any:
    """``missing_files: skip``: the datalist without the rows whose image file is absent, recorded in
    ``skipped``; the log says how many rows and how many positives of each label were lost.

    Raises:
        FileNotFoundError: not one image file exists (a wrong ``dataset_dir`` more likely than missing files).
    """
    lost_rows: list[tuple[str, str, str]] = []
    lost_pos = np.zeros(len(data.label_names))
    kept_splits: dict[str, list[dict]] = {}
    total = 0
    for split, items in data.splits.items():
        kept_splits[split] = []
        for it in items:
            total += 1
            image = it.get("image")
            if isinstance(image, (str, os.PathLike)) and not os.path.exists(image):
                lost_rows.append((str(image), it.get("id"), f"file not found ({split} split)"))
                lab = np.asarray(it.get("label", []), dtype=np.float64).reshape(-1)
                if lab.size == lost_pos.size:
                    lost_pos += np.nan_to_num(lab, nan=0.0) == 1
                continue
            kept_splits[split].append(it)
    if not lost_rows:
        return data
    if len(lost_rows) == total:
        raise FileNotFoundError(
            f"{source}: none of its {total} image files exists (first: {lost_rows[0][0]}); check dataset_dir")
    if skipped is not None:
        skipped.extend(lost_rows)
    lost = ", ".join(f"{n} {int(k)}" for n, k in zip(data.label_names, lost_pos) if k) or "none"
    where = f"; listed in {skipped.path}" if skipped is not None and skipped.path else ""
    logger.warning("missing_files: skip: left out %d of %d datalist rows whose image file is not on disk%s; "
                   "positives lost per label: %s", len(lost_rows), total, where, lost)
    return Datalist(kept_splits, data.label_names, data.task, source=data.source)

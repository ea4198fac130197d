"""CSV/TSV label files and image lists: the one CSV reader (:func:`read_table`, in the encoding the file was saved
in, see :func:`medclass.data.text.read_text_file`) and the records every CSV source builds from its rows
(:class:`TableSource`), whichever columns hold the labels (:class:`LabelLayout`: one column per label, a class
column, or a findings column, :mod:`medclass.data.sources.nih`)."""

from __future__ import annotations

import csv
import io
import logging
import os
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medclass.data.datalist import Datalist, is_one_hot_or_unknown
from medclass.data.labels import normalize_name
from medclass.data.records import (
    RESERVED_KEYS,
    assign_ids,
    check_files_exist,
    class_label_parser,
    is_mask_key,
    resolve_path,
)
from medclass.data.sources.base import DatalistSource
from medclass.data.text import read_text_file
from medclass.vocab import ALL_SPLIT, LABEL_STRINGS, SPLIT_NAMES, canonical_split, parse_label_value

logger = logging.getLogger(__name__)

__all__ = [
    "CSV_OPTIONS", "ClassColumn", "IMAGE_COLUMNS", "LabelColumns", "LabelLayout", "PATIENT_COLUMNS", "Table",
    "TableSource", "find_column", "image_items", "read_table",
]


@dataclass
class Table:
    """A CSV file's header (names stripped) and its non-empty rows as ``(line number, cells)``; line numbers count
    the header as line 1, as a spreadsheet shows them."""

    path: Path
    header: list[str]
    rows: list[tuple[int, list[str]]]

    @property
    def source(self) -> str:
        return str(self.path)

    def present(self) -> str:
        """The column names, for messages."""
        return ", ".join(repr(h) for h in self.header if h)

    def keys(self, unique: bool = True) -> dict[str, int]:
        """``{normalized column name: index}`` (:func:`~medclass.data.labels.normalize_name`).

        Raises:
            ValueError: with ``unique``, a name appearing twice (ignoring case, spaces, ``_`` and ``-``).
        """
        keys: dict[str, int] = {}
        for i, name in enumerate(self.header):
            if not name:
                continue
            key = normalize_name(name)
            if unique and key in keys:
                raise ValueError(
                    f"{self.source}: column {name!r} appears twice in the header (names match ignoring case)"
                )
            keys[key] = i
        return keys


def read_table(path: str | Path, delimiter: str | None = None) -> Table:
    """Read a CSV (``,``) or TSV (tab, for ``.tsv`` files) file.

    Raises:
        ValueError: an empty file, an empty header row, or a row the ``csv`` module cannot parse (named).
    """
    path = Path(path)
    source = str(path)
    delimiter = delimiter or ("\t" if path.suffix.lower() == ".tsv" else ",")
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
    return Table(path, header, rows)


def find_column(header_keys: Mapping[str, int], candidates: Sequence[str]) -> int | None:
    """The index of the first of ``candidates`` among the header's normalized names, or ``None``."""
    for name in candidates:
        i = header_keys.get(normalize_name(name))
        if i is not None:
            return i
    return None


# ------------------------------------------------------------------------------------------------ labelled rows
@dataclass
class LabelLayout:
    """Where a CSV's labels are and how a row becomes a label vector.

    Attributes:
        names: the label (or class) names, in label-vector order.
        task: the task.
        header: the CSV header.
        used: the columns the labels consume (not kept as extra item fields).
    """

    names: list[str]
    task: str
    header: list[str]
    used: tuple[int, ...] = ()

    def label(self, row: Sequence[str], where: str) -> np.ndarray:
        raise NotImplementedError


@dataclass
class LabelColumns(LabelLayout):
    """One 1/0/-1/blank column per label (``used``, in label order)."""

    def label(self, row: Sequence[str], where: str) -> np.ndarray:
        label = np.empty(len(self.used), dtype=np.float32)
        for k, col in enumerate(self.used):
            raw = row[col]
            value = LABEL_STRINGS.get(raw)  # fast path: 112,120 rows x 14 labels in ChestX-ray14
            if value is None:
                value = parse_label_value(raw, f"{where}, column {self.header[col]!r}")
            label[k] = value
        if self.task == "multiclass" and not is_one_hot_or_unknown(label):
            raise ValueError(f"{where}: multiclass label {label.tolist()} is not one-hot (exactly one 1)")
        return label


@dataclass
class ClassColumn(LabelLayout):
    """One column holding a class name or index (or 0/1 for a binary task)."""

    column: int = -1
    source: str = ""

    def __post_init__(self) -> None:
        self.parse = class_label_parser(self.names, self.task, self.source)

    def label(self, row: Sequence[str], where: str) -> np.ndarray:
        return self.parse(row[self.column], f"{where}, column {self.header[self.column]!r}")


#: Options of CSV sources (load_datalist's keyword options).
CSV_OPTIONS: tuple[str, ...] = (
    "image_key", "patient_key", "findings_key", "class_key", "split_key", "id_key", "no_finding", "sep", "delimiter",
)
#: Columns looked for, in order, when the option naming them is not given.
IMAGE_COLUMNS: tuple[str, ...] = ("image", "path", "Image Index", "filename", "file")
PATIENT_COLUMNS: tuple[str, ...] = ("patient_id", "Patient ID", "patientid", "subject_id")


class TableSource(DatalistSource):
    """A CSV/TSV label file, one row per image: the records every CSV source builds, with the label layout each
    kind chooses (:meth:`layout`).

    Image column: ``image_key`` or the first of :data:`IMAGE_COLUMNS`; patient column ``patient_key`` or
    :data:`PATIENT_COLUMNS`; split column ``split_key`` or ``split`` (train/training, val/valid/validation, test);
    ``id`` column (``id_key``) if present, else the file stem. Other columns are kept as strings under their header
    name; ``mask``/``mask_*`` columns become absolute paths. Row numbers in messages count the header as row 1.
    """

    kind = "CSV"
    suffixes = (".csv", ".tsv")
    option_names = CSV_OPTIONS

    def __init__(self, location, **kwargs) -> None:
        super().__init__(location, **kwargs)
        self._table: Table | None = None

    def table(self) -> Table:
        """The file's header and rows (read once)."""
        if self._table is None:
            self._table = read_table(self.location, self.options.get("delimiter"))
        return self._table

    def column(self, keys: Mapping[str, int], option: str, candidates: Sequence[str],
               required: bool = False) -> int | None:
        """The column the option names (it must exist), else the first of ``candidates`` present."""
        given = self.options.get(option)
        if given is not None:
            i = keys.get(normalize_name(given))
            if i is None:
                raise ValueError(f"{self.source}: no column {given!r} ({option}); columns present: "
                                 f"{self.table().present()}")
            return i
        i = find_column(keys, candidates)
        if i is None and required:
            raise ValueError(
                f"{self.source}: no image column (looked for {', '.join(repr(c) for c in candidates)}; pass "
                f"image_key=); columns present: {self.table().present()}"
            )
        return i

    @abstractmethod
    def layout(self, keys: Mapping[str, int], label_names: Sequence[str] | None, task: str | None) -> LabelLayout:
        """Which columns hold the labels, the label names and the task (rows padded to the header's width)."""

    def read(self, label_names: Sequence[str] | None = None, task: str | None = None) -> Datalist:
        table = self.table()
        source, header = self.source, table.header
        if not table.rows:
            raise ValueError(f"{source}: the CSV file has a header but no data rows")
        keys = table.keys()
        image_col = self.column(keys, "image_key", IMAGE_COLUMNS, required=True)
        patient_col = self.column(keys, "patient_key", PATIENT_COLUMNS)
        split_col = self.column(keys, "split_key", ("split",))
        id_col = self.column(keys, "id_key", ("id",))
        width = len(header)
        for k, (line, row) in enumerate(table.rows):
            if len(row) > width and any(c.strip() for c in row[width:]):
                raise ValueError(f"{source} row {line}: {len(row)} fields but the header has {width} columns")
            if len(row) < width:  # short rows: the missing trailing cells are blank
                table.rows[k] = (line, row + [""] * (width - len(row)))
        layout = self.layout(keys, label_names, task)
        names, task = layout.names, layout.task

        used = {image_col, patient_col, split_col, id_col, *layout.used}
        extra_cols = [(i, h) for i, h in enumerate(header) if h and i not in used and h not in RESERVED_KEYS]
        plain_cols = [(i, h) for i, h in extra_cols if not is_mask_key(h)]
        mask_cols = [(i, h) for i, h in extra_cols if is_mask_key(h)]
        base = self.base()
        check = self.check_files

        splits: dict[str, list[dict[str, Any]]] = {}
        paths: list[str] = []
        explicit: list[str | None] = []
        wheres: list[str] = []
        items: list[dict[str, Any]] = []
        missing: list[tuple[str, str]] = []
        missing_masks: list[tuple[str, str]] = []
        for line, row in table.rows:
            where = f"{source} row {line}"
            raw_image = row[image_col].strip()
            if not raw_image:
                raise ValueError(f"{where}: empty image path in column {header[image_col]!r}")
            image = resolve_path(raw_image, base)
            item: dict[str, Any] = {"image": image, "label": layout.label(row, where), "id": ""}
            if patient_col is not None:
                item["patient_id"] = row[patient_col].strip()
            for i, h in plain_cols:
                item[h] = row[i]
            for i, h in mask_cols:
                value = row[i].strip()
                if value:
                    value = resolve_path(value, base)
                    if check and not os.path.exists(value):
                        missing_masks.append((f"row {line}", value))
                item[h] = value
            if check and not os.path.exists(image):
                missing.append((f"row {line}", image))
            split = ALL_SPLIT
            if split_col is not None:
                split = canonical_split(row[split_col], f"{where}, column {header[split_col]!r}")
                if split == ALL_SPLIT:
                    raise ValueError(f"{where}: split 'all' in column {header[split_col]!r}; use train, val or test")
            splits.setdefault(split, []).append(item)
            items.append(item)
            paths.append(image)
            explicit.append(row[id_col].strip() if id_col is not None else None)
            wheres.append(f"row {line}")
        check_files_exist(missing, source)
        check_files_exist(missing_masks, source, "mask")
        for item, image_id in zip(items, assign_ids(paths, explicit, wheres, source)):
            item["id"] = image_id
        ordered = {s: splits[s] for s in (*SPLIT_NAMES, ALL_SPLIT) if s in splits}
        datalist = Datalist(ordered, names, task, source=source)
        logger.info("%s: %d images, %d labels (%s), splits %s", source, len(items), len(names), task, datalist.sizes())
        return datalist

    def images(self, image_key: str | None = None) -> list[dict[str, Any]]:
        """The image column's images (labels ignored), with the ``id`` column's ids where given."""
        table = self.table()
        keys = {normalize_name(h): i for i, h in enumerate(table.header)}
        col = find_column(keys, [image_key] if image_key else IMAGE_COLUMNS)
        if col is None:
            raise ValueError(f"{self.source}: no image column ({', '.join(IMAGE_COLUMNS)}); columns present: "
                             f"{table.header}")
        id_col = keys.get(normalize_name("id"))
        entries: list[tuple[str, str | None, str]] = []
        for line, row in table.rows:
            if not any(c.strip() for c in row):
                continue
            explicit = row[id_col].strip() if id_col is not None and id_col < len(row) and row[id_col].strip() else None
            image = row[col].strip() if col < len(row) else ""
            if not image:
                raise ValueError(f"{self.source} row {line}: empty image path in column {table.header[col]!r}")
            entries.append((image, explicit, f"row {line}"))
        return image_items(entries, self.list_base(), self.check_files, self.source)


def image_items(entries: Sequence[tuple[str, str | None, str]], base: str, check_files: bool,
                source: str) -> list[dict[str, Any]]:
    """``[{"image", "id"}]`` from ``(image path, explicit id or None, where)``: paths resolved against ``base``,
    checked to exist, unique ids.

    Raises:
        ValueError: no entry.
        FileNotFoundError: a missing image (naming its row/entry).
    """
    if not entries:
        raise ValueError(f"{source}: lists no image")
    paths = [resolve_path(image, base) for image, _, _ in entries]
    if check_files:
        check_files_exist([(where, p) for p, (_, _, where) in zip(paths, entries) if not os.path.exists(p)], source)
    ids = assign_ids(paths, [e for _, e, _ in entries], [w for _, _, w in entries], source)
    return [{"image": p, "id": i} for p, i in zip(paths, ids)]

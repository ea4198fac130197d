"""Reading datalists and image lists: :func:`load_datalist` (labelled, any source of :mod:`medclass.data.sources`),
:func:`load_image_list` and :func:`items_from_paths` (images to predict on, without labels)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medclass.data.datalist import Datalist
from medclass.data.records import assign_ids, check_files_exist
from medclass.data.sources import CSV_OPTIONS, SOURCES, CsvSource, JsonSource, MedmnistSource

__all__ = ["items_from_paths", "load_datalist", "load_image_list"]


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
      row 1, as a spreadsheet shows them. (:class:`~medclass.data.sources.CsvSource`; a ChestX-ray14 file:
      :class:`~medclass.data.sources.NihCsvSource`.)
    * ``*.json`` (or an already-parsed dict): ``{"training": [{"image": ..., "label": ...}], "validation": [...],
      "test": [...]}``; label as a list (``null`` = unknown), ``{name: value}``, a class index or a class
      name; optional top-level ``label_names`` and ``task``.
    * a folder: ``<root>/<class>/<images>`` or ``<root>/<split>/<class>/<images>`` (multiclass; label names
      are the sorted folder names). ``task="binary"`` with two class folders gives one label, positive for
      ``label_names[0]`` (default: the later folder name, e.g. ``1_abnormal``).
    * ``*.npz``: MedMNIST v2, see :func:`medclass.data.sources.medmnist.load_medmnist`.

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
    unknown = sorted(set(column_options) - set(CSV_OPTIONS))
    if unknown:
        raise TypeError(f"load_datalist: unknown option(s) {unknown}; CSV options are {', '.join(CSV_OPTIONS)}")
    ddir = Path(dataset_dir).expanduser() if dataset_dir is not None else None
    # dataset_dir is the base of relative image paths in CSV/JSON lists; folders and npz files hold their images
    needs_ddir = isinstance(source, Mapping) or Path(source).suffix.lower() in (".csv", ".tsv", ".json")
    if needs_ddir and ddir is not None and not ddir.is_dir():
        raise FileNotFoundError(f"dataset_dir {ddir} is not a folder")
    common = {"dataset_dir": ddir, "check_files": check_files}
    if isinstance(source, Mapping):
        if column_options:
            raise TypeError(f"load_datalist: options {sorted(column_options)} apply to CSV files only")
        return JsonSource(source, **common).read(label_names, task)
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"datalist source {path} does not exist")
    reader = next((r for r in SOURCES if r.accepts(path)), None)
    if column_options and reader is not CsvSource:
        raise TypeError(f"load_datalist: options {sorted(column_options)} apply to CSV files only")
    if reader is None:
        raise ValueError(f"{path}: unsupported datalist source; use a .csv, .tsv, .json, .npz file or a class folder "
                         "tree")
    return reader(path, **common, **column_options).read(label_names, task)


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
    reader = next((r for r in (MedmnistSource, JsonSource) if r.accepts(path)), CsvSource)  # anything else: a CSV
    return reader(path, dataset_dir=dataset_dir, check_files=check_files).images(image_key)


def items_from_paths(paths: Sequence[str | os.PathLike], source: str = "inputs") -> list[dict[str, Any]]:
    """``[{"image": path, "id": ...}]`` for files or study folders, with unique ids (file stems, lengthened by
    parent folder names where stems collide).

    Raises:
        FileNotFoundError: a path does not exist (named).
        ValueError: a path is listed twice.
    """
    resolved = [str(Path(p)) for p in paths]
    check_files_exist([(f"item {i}", p) for i, p in enumerate(resolved) if not os.path.exists(p)], source, "input")
    ids = assign_ids(resolved, [None] * len(resolved), [f"item {i}" for i in range(len(resolved))], source)
    return [{"image": p, "id": i} for p, i in zip(resolved, ids)]

"""Datalists, labels, patient-disjoint splits and synthetic phantoms for medclass.

Public API::

    CXR14_LABELS, parse_label_value, labels_from_findings, label_matrix, label_prevalence
    Datalist, load_datalist, load_image_list, items_from_paths, load_medmnist, MEDMNIST_INFO
    DatalistSource and one reader per source: CsvSource, NihCsvSource, JsonSource, FolderSource, MedmnistSource
    find_images, find_studies (image files in folders; IMAGE_EXTENSIONS is medclass.vocab's)
    split_patients, split_report, log_split_report, ensure_splits, patient_overlap,
    write_split_file, read_split_file, apply_split_file, SPLIT_FILE_COLUMNS
    PHANTOM_LABELS, make_phantoms, ensure_phantoms
"""

from __future__ import annotations

from medclass.data.datalist import Datalist
from medclass.data.images import find_images, find_studies
from medclass.data.labels import (
    CXR14_LABELS,
    NO_FINDING,
    FindingsParser,
    label_matrix,
    label_prevalence,
    labels_from_findings,
    normalize_name,
)
from medclass.data.load import items_from_paths, load_datalist, load_image_list
from medclass.data.skipped import MISSING_FILES, SkipList, check_image_content, drop_missing_files, screen_items
from medclass.data.sources import (
    SOURCES,
    CsvSource,
    DatalistSource,
    FolderSource,
    JsonSource,
    MedmnistSource,
    NihCsvSource,
)
from medclass.data.sources.medmnist import MEDMNIST_INFO, load_medmnist, medmnist_flag
from medclass.data.split import (
    SPLIT_FILE_COLUMNS,
    apply_split_file,
    ensure_splits,
    log_split_report,
    patient_key,
    patient_overlap,
    read_split_file,
    split_patients,
    split_report,
    write_split_file,
)
from medclass.data.synthetic import PHANTOM_LABELS, PHANTOM_VERSION, ensure_phantoms, make_phantoms
from medclass.data.synthetic3d import (
    VOLUME_PHANTOM_LABELS,
    ensure_volume_phantoms,
    make_volume_phantoms,
)
from medclass.vocab import IMAGE_EXTENSIONS, SPLIT_NAMES, TASKS, canonical_split, parse_label_value

#: What inference accepts as an image file: the one list, :data:`medclass.vocab.IMAGE_EXTENSIONS` (an old name).
READABLE_EXTENSIONS: tuple[str, ...] = IMAGE_EXTENSIONS

__all__ = [
    "SOURCES",
    "CsvSource",
    "DatalistSource",
    "FolderSource",
    "JsonSource",
    "MedmnistSource",
    "NihCsvSource",
    "find_images",
    "find_studies",
    "MISSING_FILES",
    "SkipList",
    "check_image_content",
    "drop_missing_files",
    "screen_items",
    "CXR14_LABELS",
    "IMAGE_EXTENSIONS",
    "READABLE_EXTENSIONS",
    "MEDMNIST_INFO",
    "NO_FINDING",
    "PHANTOM_LABELS",
    "PHANTOM_VERSION",
    "VOLUME_PHANTOM_LABELS",
    "SPLIT_NAMES",
    "TASKS",
    "Datalist",
    "FindingsParser",
    "canonical_split",
    "ensure_phantoms",
    "ensure_splits",
    "ensure_volume_phantoms",
    "label_matrix",
    "label_prevalence",
    "labels_from_findings",
    "items_from_paths",
    "load_datalist",
    "load_image_list",
    "load_medmnist",
    "log_split_report",
    "make_phantoms",
    "make_volume_phantoms",
    "medmnist_flag",
    "normalize_name",
    "parse_label_value",
    "patient_key",
    "patient_overlap",
    "split_patients",
    "split_report",
    "SPLIT_FILE_COLUMNS",
    "apply_split_file",
    "read_split_file",
    "write_split_file",
]

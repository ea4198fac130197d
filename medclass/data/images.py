"""Finding image files in folders: the one discovery function (:func:`find_images`), used by class-folder
datalists and by inference on a folder, and the grouping of a folder's files into 3D studies
(:func:`find_studies`). What counts as an image file is :data:`medclass.vocab.IMAGE_EXTENSIONS`."""

from __future__ import annotations

import os
from pathlib import Path

from medclass.vocab import DICOM_SUFFIXES, IMAGE_EXTENSIONS, is_image_name

__all__ = ["find_images", "find_studies", "visible_dirs"]


def visible_dirs(folder: Path) -> list[Path]:
    """The sub-folders of ``folder`` not starting with ``.``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def find_images(folder: str | os.PathLike) -> list[str]:
    """Every image file under ``folder`` (recursively; hidden files and folders skipped): a folder's own files
    sorted by name, then its sub-folders' in name order."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(os.path.join(dirpath, f) for f in sorted(filenames) if is_image_name(f))
    return found


def _is_dicom_name(name: str) -> bool:
    return name.lower().endswith(DICOM_SUFFIXES)


def find_studies(folder: str | os.PathLike) -> list[Path]:
    """The 3D inputs under ``folder``: every folder holding two or more DICOM files is one series (one study);
    NIfTI and other volume files, and lone DICOM files (multi-frame 3D), are one study each.

    Raises:
        ValueError: no study found.
    """
    studies = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        visible = sorted(f for f in files if not f.startswith("."))
        dicoms = [f for f in visible if _is_dicom_name(f)]
        if len(dicoms) >= 2:
            studies.append(Path(root))
            visible = [f for f in visible if not _is_dicom_name(f)]
        studies += [Path(root) / f for f in visible if f.lower().endswith(IMAGE_EXTENSIONS)]
    if not studies:
        raise ValueError(f"{folder}: no volumes (NIfTI files, DICOM series folders or 3D DICOM files) found")
    return studies

"""Class-per-folder trees: ``<root>/<class>/<images>`` or ``<root>/<split>/<class>/<images>`` (MedNIST, NIH1000)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medclass.data.datalist import Datalist
from medclass.data.images import find_images, visible_dirs
from medclass.data.labels import normalize_name
from medclass.data.records import assign_ids, check_optional_task
from medclass.data.sources.base import DatalistSource
from medclass.vocab import ALL_SPLIT, IMAGE_EXTENSIONS, SPLIT_ALIASES, SPLIT_NAMES

logger = logging.getLogger(__name__)

__all__ = ["FolderSource", "read_class_folders"]


class FolderSource(DatalistSource):
    """A class-per-folder tree: multiclass, label names the sorted folder names; ``task="binary"`` with two class
    folders gives one label, positive for ``label_names[0]`` (default: the later folder name, e.g. ``1_abnormal``).
    Images are the files of :data:`medclass.vocab.IMAGE_EXTENSIONS` (:func:`medclass.data.images.find_images`)."""

    kind = "class folder"

    @classmethod
    def accepts(cls, location: Any) -> bool:
        return isinstance(location, (str, os.PathLike)) and Path(location).expanduser().is_dir()

    def read(self, label_names: Sequence[str] | None = None, task: str | None = None) -> Datalist:
        return read_class_folders(self.location, label_names, task)


def read_class_folders(root: Path, label_names: Sequence[str] | None, task: str | None) -> Datalist:
    """The records of a class-per-folder tree (see :class:`FolderSource`)."""
    source = str(root)
    check_optional_task(task, source)
    subdirs = visible_dirs(root)
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
        classes = visible_dirs(folder)
        if not classes:
            raise ValueError(f"{folder}: no class folders in this split folder")
        found[split] = {}
        for class_dir in classes:
            images = find_images(class_dir)
            if not images:
                raise ValueError(f"{class_dir}: class folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
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
    ids = assign_ids(paths, [None] * len(paths), paths, source)
    for item, image_id in zip(items, ids):
        item["id"] = image_id
    datalist = Datalist(splits, names, task, source=source)
    logger.info("%s: %d images in %d classes, splits %s", source, len(items), len(folder_names), datalist.sizes())
    return datalist

"""MedMNIST v2 ``.npz`` files (Yang et al., Scientific Data 2023) as datalists with in-memory images."""

from __future__ import annotations

import logging
import os
import re
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medclass.data.datalist import Datalist
from medclass.data.labels import CXR14_LABELS
from medclass.data.sources.base import DatalistSource
from medclass.vocab import check_task

logger = logging.getLogger(__name__)

__all__ = ["MEDMNIST_INFO", "MedmnistSource", "load_medmnist", "medmnist_flag"]

_ORGANS = (
    "bladder",
    "femur_left",
    "femur_right",
    "heart",
    "kidney_left",
    "kidney_right",
    "liver",
    "lung_left",
    "lung_right",
    "pancreas",
    "spleen",
)

#: Known MedMNIST v2 sets: flag -> (task, class names by label index). For binary sets the label name is the
#: class of label 1 (``breastmnist``: 1 = normal or benign, 0 = malignant).
MEDMNIST_INFO: dict[str, tuple[str, tuple[str, ...]]] = {
    "pathmnist": (
        "multiclass",
        (
            "adipose",
            "background",
            "debris",
            "lymphocytes",
            "mucus",
            "smooth_muscle",
            "normal_colon_mucosa",
            "cancer_associated_stroma",
            "colorectal_adenocarcinoma_epithelium",
        ),
    ),
    "chestmnist": ("multilabel", CXR14_LABELS),
    "dermamnist": (
        "multiclass",
        (
            "actinic_keratoses_and_intraepithelial_carcinoma",
            "basal_cell_carcinoma",
            "benign_keratosis_like_lesions",
            "dermatofibroma",
            "melanoma",
            "melanocytic_nevi",
            "vascular_lesions",
        ),
    ),
    "octmnist": ("multiclass", ("choroidal_neovascularization", "diabetic_macular_edema", "drusen", "normal")),
    "pneumoniamnist": ("binary", ("normal", "pneumonia")),
    "retinamnist": ("multiclass", ("grade_0", "grade_1", "grade_2", "grade_3", "grade_4")),
    "breastmnist": ("binary", ("malignant", "normal_or_benign")),
    "bloodmnist": (
        "multiclass",
        (
            "basophil",
            "eosinophil",
            "erythroblast",
            "immature_granulocytes",
            "lymphocyte",
            "monocyte",
            "neutrophil",
            "platelet",
        ),
    ),
    "tissuemnist": (
        "multiclass",
        (
            "collecting_duct_connecting_tubule",
            "distal_convoluted_tubule",
            "glomerular_endothelial_cells",
            "interstitial_endothelial_cells",
            "leukocytes",
            "podocytes",
            "proximal_tubule_segments",
            "thick_ascending_limb",
        ),
    ),
    "organamnist": ("multiclass", _ORGANS),
    "organcmnist": ("multiclass", _ORGANS),
    "organsmnist": ("multiclass", _ORGANS),
    "organmnist3d": ("multiclass", _ORGANS),
    "nodulemnist3d": ("binary", ("benign", "malignant")),
    "adrenalmnist3d": ("binary", ("normal", "adrenal_mass")),
    "fracturemnist3d": ("multiclass", ("buckle_rib_fracture", "nondisplaced_rib_fracture", "displaced_rib_fracture")),
    "vesselmnist3d": ("binary", ("vessel", "aneurysm")),
    "synapsemnist3d": ("binary", ("inhibitory_synapse", "excitatory_synapse")),
}

_NPZ_SPLITS = (("train", "training"), ("val", "validation"), ("test", "test"))


def medmnist_flag(path: str | os.PathLike) -> str:
    """The MedMNIST set name of a file: ``pneumoniamnist_64.npz`` -> ``pneumoniamnist``."""
    stem = Path(path).name
    if stem.lower().endswith(".npz"):
        stem = stem[:-4]
    return re.sub(r"_\d+$", "", stem).lower()


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(
            f"{path}: holds a single array, not a MedMNIST .npz archive of {{train,val,test}}_{{images,labels}}"
        )
    with archive:
        needed = [f"{s}_{kind}" for s, _ in _NPZ_SPLITS for kind in ("images", "labels")]
        missing = [k for k in needed if k not in archive.files]
        if missing:
            raise ValueError(f"{path}: missing keys {missing} (keys present: {sorted(archive.files)})")
        arrays: dict[str, np.ndarray] = {}
        for key in needed:
            try:
                arrays[key] = archive[key]
            except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
                raise ValueError(f"{path}: array {key!r} is corrupt ({exc})") from None
    return arrays


def load_medmnist(
    path: str | os.PathLike,
    label_names: Sequence[str] | None = None,
    *,
    task: str | None = None,
) -> Datalist:
    """Read a MedMNIST v2 ``.npz`` (keys ``{train,val,test}_{images,labels}``) with its official split.

    Items hold the image itself: ``{"image": uint8 array (H, W) | (H, W, 3) | (D, H, W), "label": float32 (C,),
    "id": "<file stem>_<train|val|test>_<index>"}`` (no channel axis is added; arrays are views into the
    loaded split array).

    Task: the known set's task (:data:`MEDMNIST_INFO`); for an unknown set, labels (N, L>1) -> multilabel,
    (N, 1) with values {0, 1} -> binary, otherwise multiclass with one-hot labels of length max + 1.
    Label names: the known set's names (binary: the name of class 1, e.g. ``["pneumonia"]``), else
    ``class_0..`` (binary: ``["class_1"]``).

    Args:
        path: the ``.npz`` file.
        label_names: override the label/class names (length must match the labels).
        task: override the task (``"multiclass"`` on a binary set gives 2-class one-hot labels).

    Returns:
        Datalist with splits training (train), validation (val), test.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a readable npz, missing keys, mismatched image/label counts, unexpected shapes, or
            label values that do not fit the task; the message names the file.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"MedMNIST file {path} does not exist")
    arrays = _read_arrays(path)
    source = str(path)
    labels_by_split: dict[str, np.ndarray] = {}
    for npz_split, _ in _NPZ_SPLITS:
        images, labels = arrays[f"{npz_split}_images"], arrays[f"{npz_split}_labels"]
        if images.ndim not in (3, 4):
            raise ValueError(
                f"{source}: {npz_split}_images has shape {images.shape}; "
                "expected (N, H, W), (N, H, W, 3) or (N, D, H, W)"
            )
        if labels.ndim == 1:
            labels = labels[:, None]
        if labels.ndim != 2 or labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"{source}: {npz_split}_labels has shape {labels.shape} "
                f"for {images.shape[0]} images in {npz_split}_images"
            )
        if not np.issubdtype(labels.dtype, np.number):
            raise ValueError(f"{source}: {npz_split}_labels has non-numeric dtype {labels.dtype}")
        labels_by_split[npz_split] = labels
    widths = {lab.shape[1] for lab in labels_by_split.values()}
    if len(widths) != 1:
        raise ValueError(f"{source}: the splits have different label widths {sorted(widths)}")
    width = widths.pop()
    values = np.unique(np.concatenate([lab.reshape(-1) for lab in labels_by_split.values()]))
    if values.size == 0:
        raise ValueError(f"{source}: holds no images")
    flag = medmnist_flag(path)
    known = MEDMNIST_INFO.get(flag)
    if known is not None and width != (len(known[1]) if known[0] == "multilabel" else 1):
        logger.warning(
            "%s: labels have %d columns, unlike MedMNIST %s; treating it as an unknown set", source, width, flag
        )
        known = None

    if known is not None:
        inferred_task, classes = known
    elif width > 1:
        inferred_task, classes = "multilabel", tuple(f"class_{i}" for i in range(width))
    elif set(values.tolist()) <= {0, 1}:
        inferred_task, classes = "binary", ("class_0", "class_1")
    else:
        inferred_task, classes = "multiclass", tuple(f"class_{i}" for i in range(int(values.max()) + 1))
    task = check_task(task or inferred_task, source)
    if task == "multiclass":
        if width != 1:
            raise ValueError(
                f"{source}: labels have {width} columns; task 'multiclass' needs one class index per image"
            )
        needed = max(int(values.max()) + 1, 2)
        use_known = inferred_task in ("multiclass", "binary") and len(classes) >= needed
        names = list(classes) if use_known else [f"class_{i}" for i in range(needed)]
    elif width > 1:
        if task == "binary":
            raise ValueError(f"{source}: labels have {width} columns; task 'binary' needs one")
        names = list(classes) if inferred_task == "multilabel" else [f"class_{i}" for i in range(width)]
    else:  # one 0/1 column, as binary (or a one-label multilabel)
        names = [classes[-1]] if inferred_task == "binary" else ["class_1"]
    if label_names is not None:
        if len(label_names) != len(names):
            raise ValueError(
                f"{source}: {len(label_names)} label names given but the {task} labels of this file have "
                f"{len(names)} entries ({names})"
            )
        names = [str(n) for n in label_names]

    if task in ("multilabel", "binary"):
        bad = values[~np.isin(values, (0, 1))]
        if bad.size:
            raise ValueError(f"{source}: {task} labels must be 0 or 1, found {bad.tolist()[:5]}")
    else:
        bad = values[(values < 0) | (values >= len(names)) | (values != np.round(values))]
        if bad.size:
            raise ValueError(f"{source}: class indices must be 0..{len(names) - 1}, found {bad.tolist()[:5]}")

    stem = path.name[:-4] if path.name.lower().endswith(".npz") else path.stem
    splits: dict[str, list[dict[str, Any]]] = {}
    for npz_split, split in _NPZ_SPLITS:
        images = arrays[f"{npz_split}_images"]
        labels = labels_by_split[npz_split]
        if task == "multiclass":
            matrix = np.eye(len(names), dtype=np.float32)[labels[:, 0].astype(np.int64)]
        else:
            matrix = labels.astype(np.float32)
        splits[split] = [
            {"image": images[i], "label": matrix[i], "id": f"{stem}_{npz_split}_{i}"} for i in range(images.shape[0])
        ]
    datalist = Datalist(splits, names, task, source=source)
    logger.info("%s: MedMNIST %s, %s labels %s, splits %s", source, flag, task, names, datalist.sizes())
    return datalist


class MedmnistSource(DatalistSource):
    """A MedMNIST v2 ``.npz`` with its official split; the items hold the images themselves (see
    :func:`load_medmnist`). ``dataset_dir`` and ``check_files`` do not apply (the file holds its images)."""

    kind = "MedMNIST npz"
    suffixes = (".npz",)

    def read(self, label_names: Sequence[str] | None = None, task: str | None = None) -> Datalist:
        return load_medmnist(self.location, label_names, task=task)

    def images(self, image_key: str | None = None) -> list[dict[str, Any]]:
        """Every split's images with their ids."""
        return [{"image": it["image"], "id": it["id"]} for items in self.read().splits.values() for it in items]

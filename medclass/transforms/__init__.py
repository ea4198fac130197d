"""Image reading and preset transform pipelines for 2D radiographs and 3D CT / MR volumes.

Conventions: images are channel-first ``float32``. 2D: ``(1, H, W)`` (rows top to bottom, columns
left to right, as displayed) for every source, NIfTI / ITK slices and oriented DICOMs put in that order
from their geometry (:mod:`medclass.transforms.orientation`; :func:`input_geometry` maps results back onto
the input's grid). 3D arrays (e.g. MedMNIST): ``(1, D, H, W)`` in the order given, with an identity affine.
3D files (NIfTI, DICOM series folders and multi-frame files, ITK formats): read in voxel-index order
``(1, I, J, K)`` (DICOM: columns, rows, slices) with the voxel-to-world RAS affine on the
:class:`~monai.data.MetaTensor`; the presets reorient them: ``ct`` / ``mr`` to ``(1, X, Y, Z)`` along Right,
Anterior, Superior, ``generic`` to the ``(1, D, H, W)`` of arrays. See :mod:`medclass.transforms.io` for the
reading rules and :mod:`medclass.transforms.presets` for the pipelines, :mod:`medclass.transforms.batch` for the
same training augmentation applied to whole batches on the training device.
"""

from __future__ import annotations

from medclass.transforms.array import (
    CT_WINDOWS,
    AdaptiveResize,
    AdaptiveResized,
    CropOrPad,
    CropOrPadd,
    LabelToTensor,
    LabelToTensord,
    OrientFromGeometry,
    OrientFromGeometryd,
    RobustScaleIntensity,
    RobustScaleIntensityd,
    WindowIntensity,
    WindowIntensityd,
    ZScoreIntensity,
    ZScoreIntensityd,
    resolve_window,
)
from medclass.transforms.post import Probabilitiesd
from medclass.transforms.io import META_KEYS, ReadImage, ReadImaged, read_image
from medclass.transforms.orientation import InputGeometry, input_geometry
from medclass.transforms.augment import AUGMENT_ON, DEFAULT_AUGMENT
from medclass.transforms.presets import (
    OPTION_NAMES,
    PRESETS,
    Preset,
    WithOptions,
    build_transforms,
    first_random_index,
    register_preset,
    resolve_augment,
    resolve_options,
    transform_error,
)
from medclass.transforms.batch import AugmentParams, BatchAugment, build_batch_augment

__all__ = [
    "Probabilitiesd",
    "META_KEYS",
    "read_image",
    "ReadImage",
    "ReadImaged",
    "InputGeometry",
    "input_geometry",
    "CT_WINDOWS",
    "resolve_window",
    "RobustScaleIntensity",
    "RobustScaleIntensityd",
    "WindowIntensity",
    "WindowIntensityd",
    "ZScoreIntensity",
    "ZScoreIntensityd",
    "AdaptiveResize",
    "AdaptiveResized",
    "CropOrPad",
    "CropOrPadd",
    "LabelToTensor",
    "LabelToTensord",
    "OrientFromGeometry",
    "OrientFromGeometryd",
    "AUGMENT_ON",
    "DEFAULT_AUGMENT",
    "OPTION_NAMES",
    "Preset",
    "PRESETS",
    "WithOptions",
    "register_preset",
    "resolve_augment",
    "resolve_options",
    "build_transforms",
    "first_random_index",
    "transform_error",
    "AugmentParams",
    "BatchAugment",
    "build_batch_augment",
]

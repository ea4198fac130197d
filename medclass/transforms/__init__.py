"""Image reading and preset transform pipelines for 2D radiographs and 3D volumes.

Conventions: images are channel-first ``float32``, ``(1, H, W)`` for 2D (rows top to bottom,
columns left to right, as displayed) and ``(1, D, H, W)`` for 3D arrays. See
:mod:`medclass.transforms.io` for the reading rules and :mod:`medclass.transforms.presets` for the
pipelines.
"""

from __future__ import annotations

from medclass.transforms.array import (
    AdaptiveResize,
    AdaptiveResized,
    LabelToTensor,
    LabelToTensord,
    RobustScaleIntensity,
    RobustScaleIntensityd,
)
from medclass.transforms.io import META_KEYS, ReadImage, ReadImaged, read_image
from medclass.transforms.presets import (
    DEFAULT_AUGMENT,
    PRESETS,
    Preset,
    build_transforms,
    first_random_index,
    register_preset,
    resolve_augment,
    transform_error,
)

__all__ = [
    "META_KEYS",
    "read_image",
    "ReadImage",
    "ReadImaged",
    "RobustScaleIntensity",
    "RobustScaleIntensityd",
    "AdaptiveResize",
    "AdaptiveResized",
    "LabelToTensor",
    "LabelToTensord",
    "DEFAULT_AUGMENT",
    "Preset",
    "PRESETS",
    "register_preset",
    "resolve_augment",
    "build_transforms",
    "first_random_index",
    "transform_error",
]

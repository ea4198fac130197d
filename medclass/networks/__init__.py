"""Classification networks: one factory (:func:`build_classifier`) over MONAI DenseNet, ResNet and ViT.

Every model is a :class:`Classifier` returning plain logits ``(B, num_classes)`` for inputs
``(B, C, H, W[, D])``, with its decision thresholds (buffer) and label names (extra state) in its ``state_dict``.
3D CNNs can use ACS convolutions (``conv="acs"``, :class:`ACSConv`) and start from 2D checkpoints
(``inflate="i3d"|"center"|"acs"``, :func:`inflate_2d_to_3d`).
"""

from __future__ import annotations

from medclass.networks.acs import ACSConv, acs_split, convert_to_acs
from medclass.networks.classifier import Classifier, DenseNetClassifier, ResNetClassifier, ViTClassifier
from medclass.networks.factory import (
    ARCHS,
    CONVS,
    STEM_STRIDE,
    STEMS,
    build_classifier,
    choose_patch_size,
    choose_stem,
    normalize_image_size,
)
from medclass.networks.inflate import INFLATE_MODES, inflate_2d_to_3d
from medclass.networks.weights import LoadReport, load_weights, read_state_dict

__all__ = [
    "ACSConv",
    "ARCHS",
    "CONVS",
    "INFLATE_MODES",
    "STEMS",
    "STEM_STRIDE",
    "Classifier",
    "DenseNetClassifier",
    "LoadReport",
    "ResNetClassifier",
    "ViTClassifier",
    "acs_split",
    "build_classifier",
    "choose_patch_size",
    "choose_stem",
    "convert_to_acs",
    "inflate_2d_to_3d",
    "load_weights",
    "normalize_image_size",
    "read_state_dict",
]

"""Classification networks: one factory (:func:`build_classifier`) over MONAI DenseNet, ResNet and ViT.

Every model is a :class:`Classifier` returning plain logits ``(B, num_classes)`` for inputs
``(B, C, H, W[, D])``, with its decision thresholds (buffer) and label names (extra state) in its ``state_dict``.
"""

from __future__ import annotations

from medclass.networks.classifier import Classifier, DenseNetClassifier, ResNetClassifier, ViTClassifier
from medclass.networks.factory import (
    ARCHS,
    STEM_STRIDE,
    STEMS,
    build_classifier,
    choose_patch_size,
    choose_stem,
    normalize_image_size,
)
from medclass.networks.weights import LoadReport, load_weights, read_state_dict

__all__ = [
    "ARCHS",
    "STEMS",
    "STEM_STRIDE",
    "Classifier",
    "DenseNetClassifier",
    "LoadReport",
    "ResNetClassifier",
    "ViTClassifier",
    "build_classifier",
    "choose_patch_size",
    "choose_stem",
    "load_weights",
    "normalize_image_size",
    "read_state_dict",
]

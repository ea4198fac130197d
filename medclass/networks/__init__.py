"""Classification networks: one factory (:func:`build_classifier`, or :func:`build` of a :class:`ClassifierSpec`)
over MONAI DenseNet, ResNet and ViT.

Every model is a :class:`Classifier` returning plain logits ``(B, num_classes)`` for inputs
``(B, C, H, W[, D])``, with its decision thresholds (buffer) and label names (extra state) in its ``state_dict``.
3D CNNs can use ACS convolutions (``conv="acs"``, :class:`ACSConv`) and start from 2D checkpoints
(``inflate="i3d"|"center"|"acs"``, :func:`inflate_2d_to_3d`).

Pretrained starts (:func:`load_pretrained`, ``pretrained=`` of :func:`build_classifier`): named files of
:data:`WEIGHTS` (torchvision / timm ImageNet, TorchXRayVision chest X-ray, MedicalNet 3D; :func:`fetch`) or files
recognised from their keys (:mod:`medclass.networks.sources`); fine-tuning controls in
:mod:`medclass.networks.finetune`.
"""

from __future__ import annotations

from medclass.networks.acs import ACSConv, acs_split, convert_to_acs
from medclass.networks.classifier import Classifier, DenseNetClassifier, ResNetClassifier, ViTClassifier
from medclass.networks.ensemble import ENSEMBLE_BY, Ensemble, probabilities_to_logits
from medclass.networks.factory import build, build_classifier
from medclass.networks.spec import (
    ARCHS,
    CONVS,
    STEM_STRIDE,
    STEMS,
    ClassifierSpec,
    choose_patch_size,
    choose_stem,
    normalize_image_size,
)
from medclass.networks.checkpoint import read_safetensors
from medclass.networks.finetune import Unfreeze, freeze, param_groups, stages, unfreeze
from medclass.networks.hub import WEIGHTS, WeightFile, cache_dir, fetch
from medclass.networks.inflate import INFLATE_MODES, inflate_2d_to_3d
from medclass.networks.pretrained import (
    Preprocessing,
    PretrainedReport,
    architecture_args,
    inspect_pretrained,
    load_pretrained,
)
from medclass.networks.modelfile import check_given, model_settings, read_model_record
from medclass.networks.sources import detect_layout, map_to_monai
from medclass.networks.weights import LoadReport, load_weights, read_state_dict

__all__ = [
    "ACSConv",
    "ARCHS",
    "CONVS",
    "INFLATE_MODES",
    "STEMS",
    "STEM_STRIDE",
    "Classifier",
    "ClassifierSpec",
    "DenseNetClassifier",
    "ENSEMBLE_BY",
    "Ensemble",
    "LoadReport",
    "Preprocessing",
    "PretrainedReport",
    "Unfreeze",
    "WEIGHTS",
    "WeightFile",
    "ResNetClassifier",
    "ViTClassifier",
    "acs_split",
    "architecture_args",
    "build",
    "build_classifier",
    "cache_dir",
    "check_given",
    "choose_patch_size",
    "choose_stem",
    "convert_to_acs",
    "detect_layout",
    "fetch",
    "freeze",
    "inflate_2d_to_3d",
    "inspect_pretrained",
    "load_pretrained",
    "load_weights",
    "map_to_monai",
    "model_settings",
    "normalize_image_size",
    "param_groups",
    "probabilities_to_logits",
    "read_model_record",
    "read_safetensors",
    "read_state_dict",
    "stages",
    "unfreeze",
]

"""``build_classifier``: one factory over MONAI DenseNet / ResNet / ViT with input-size-aware stems.

MONAI's constructors differ (``in_channels``/``out_channels`` for DenseNet, ``n_input_channels``/``num_classes``
for ResNet, ``img_size``/``patch_size`` for ViT) and their default stems suit neither small images (DenseNet fails
on 28 px) nor CPUs (MONAI ResNet's stem has stride 1 with a 7x7 kernel). The factory hides both.
"""

from __future__ import annotations

import logging
import math
import os
import json
from collections.abc import Mapping, Sequence
from typing import Any

import torch.nn as nn
from monai.networks.layers.factories import Conv
from monai.networks.nets import ViT, DenseNet121, DenseNet169, DenseNet201
from monai.networks.nets.resnet import ResNet, ResNetBlock, ResNetBottleneck

from medclass.networks.acs import convert_to_acs
from medclass.networks.classifier import (
    Classifier,
    DenseNetClassifier,
    ResNetClassifier,
    ViTClassifier,
    num_params,
)
from medclass.networks.finetune import freeze as freeze_stages
from medclass.networks.pretrained import architecture_args, inspect_pretrained, load_pretrained
from medclass.networks.safe_conv import make_small_3d_convs_safe
from medclass.networks.spec import (  # noqa: F401  (ARCHS ... choose_stem: their names here before spec.py)
    ARCHS,
    CONVS,
    MIN_CAM_GRID,
    STEM_STRIDE,
    STEMS,
    ClassifierSpec,
    choose_patch_size,
    choose_stem,
    densenet_feature_size,
    is_int,
    normalize_image_size,
    resnet_feature_size,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ARCHS", "CONVS", "STEMS", "ClassifierSpec", "build", "build_classifier", "choose_patch_size", "choose_stem",
    "normalize_image_size", "vit_settings",
]

_DENSENETS = {"densenet121": DenseNet121, "densenet169": DenseNet169, "densenet201": DenseNet201}
_RESNETS: dict[str, tuple[type[nn.Module], list[int]]] = {
    "resnet10": (ResNetBlock, [1, 1, 1, 1]),  # MedicalNet's
    "resnet18": (ResNetBlock, [2, 2, 2, 2]),
    "resnet34": (ResNetBlock, [3, 4, 6, 3]),
    "resnet50": (ResNetBottleneck, [3, 4, 6, 3]),
    "resnet101": (ResNetBottleneck, [3, 4, 23, 3]),
    "resnet152": (ResNetBottleneck, [3, 8, 36, 3]),
}

_VIT_DEFAULTS: dict[str, Any] = {"hidden_size": 384, "mlp_dim": 1536, "num_layers": 8, "num_heads": 6}
_VIT_ARCHS: dict[str, dict[str, Any]] = {
    "vit": _VIT_DEFAULTS,
    "vit_small": {"hidden_size": 384, "mlp_dim": 1536, "num_layers": 12, "num_heads": 6, "qkv_bias": True},
    "vit_base": {"hidden_size": 768, "mlp_dim": 3072, "num_layers": 12, "num_heads": 12, "qkv_bias": True},
}
_VIT_LN_EPS = {"vit_small": 1e-6, "vit_base": 1e-6}  # timm / torchvision ViT LayerNorms (MONAI's default is 1e-5)

# constructor arguments the factory sets itself -> what to use instead
_RESERVED: dict[str, dict[str, str]] = {
    "densenet": {
        "spatial_dims": "spatial_dims",
        "in_channels": "in_channels",
        "out_channels": "num_classes",
        "init_features": "width",
        "pretrained": "pretrained (a checkpoint path)",
        "progress": "pretrained (a checkpoint path)",
    },
    "resnet": {
        "spatial_dims": "spatial_dims",
        "n_input_channels": "in_channels",
        "num_classes": "num_classes",
        "block": "arch",
        "block_inplanes": "width",
        "widen_factor": "width",
        "conv1_t_size": "stem",
        "conv1_t_stride": "stem",
        "no_max_pool": "stem",
        "feed_forward": "forward_features()",
        "pretrained": "pretrained (a checkpoint path)",
    },
    "vit": {
        "spatial_dims": "spatial_dims",
        "in_channels": "in_channels",
        "img_size": "image_size",
        "classification": "nothing (always a classifier)",
        "num_classes": "num_classes",
        "post_activation": "nothing (logits are returned without activation)",
    },
}


def vit_settings(arch: str) -> dict[str, Any]:
    """The MONAI ``ViT`` arguments medclass uses for a ViT arch by default (``hidden_size``, ``mlp_dim``,
    ``num_layers``, ``num_heads``, ...); empty for CNNs."""
    return dict(_VIT_ARCHS.get(str(arch).lower(), {}))


def _recorded_kwargs(arch_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor arguments that can be written into the model file's JSON metadata (others are logged)."""
    out = {}
    for key, value in arch_kwargs.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            logger.warning("build_classifier: argument %s=%r is not recorded in the model file (not JSON); give it "
                           "again when rebuilding the model", key, value)
            continue
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def _check_reserved(family: str, arch_kwargs: dict[str, Any]) -> None:
    for key in arch_kwargs:
        if key in _RESERVED[family]:
            raise TypeError(
                f"build_classifier sets {family} argument {key!r} itself: use {_RESERVED[family][key]} instead"
            )


def _build_densenet(
    arch: str, spatial_dims: int, in_channels: int, num_classes: int, stem: str, width: int, arch_kwargs: dict
) -> nn.Module:
    net = _DENSENETS[arch](
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=num_classes,
        init_features=width,
        **arch_kwargs,
    )
    if stem != "standard":
        # medium: one stride-2 conv instead of a full-resolution conv + max-pool (same stride, 1.5x faster in 3D)
        stride = 2 if stem == "medium" else 1
        conv = Conv[Conv.CONV, spatial_dims](in_channels, width, kernel_size=3, stride=stride, padding=1, bias=False)
        nn.init.kaiming_normal_(conv.weight)
        net.features.conv0 = conv
        net.features.pool0 = nn.Identity()
    return net


def _build_resnet(
    arch: str, spatial_dims: int, in_channels: int, num_classes: int, stem: str, width: int, arch_kwargs: dict
) -> nn.Module:
    block, layers = _RESNETS[arch]
    layers = list(arch_kwargs.pop("layers", layers))
    if len(layers) != 4 or not all(is_int(n) and n >= 1 for n in layers):
        raise ValueError(f"layers must be 4 positive ints (blocks per stage), got {layers!r}")
    stem_args = {
        "small": {"conv1_t_size": 3, "conv1_t_stride": 1, "no_max_pool": True},
        # one stride-2 conv instead of a full-resolution conv + max-pool: same stride, 1.5x faster in 3D
        "medium": {"conv1_t_size": 3, "conv1_t_stride": 2, "no_max_pool": True},
        "standard": {"conv1_t_size": 7, "conv1_t_stride": 2, "no_max_pool": False},
    }[stem]
    return ResNet(
        block,
        layers,
        [width, 2 * width, 4 * width, 8 * width],
        spatial_dims=spatial_dims,
        n_input_channels=in_channels,
        num_classes=num_classes,
        **stem_args,
        **arch_kwargs,
    )


def _dilate_last_stage(model: Classifier, family: str) -> None:
    """Keep the last stage at the previous stage's resolution (DeepLab's output stride 16 -> 8 trick).

    ResNet: ``layer4``'s stride-2 convolutions (first block's 3x3 conv and shortcut) get stride 1 and its other
    3x3 convolutions dilation 2. DenseNet: the last transition (``transition3``) stops pooling and the last dense
    block's 3x3 convolutions get dilation 2. Same parameters (checkpoints of either variant load into the other),
    a last feature grid twice as fine per side (8x8 -> 16x16 at 128 px with the medium stem; 3^3 -> 6^3 at 48^3):
    DenseNet's Grad-CAM grid (ResNet's Grad-CAM reads ``layer3``, whose grid this does not change).
    """
    bb = model.backbone
    if family == "resnet":
        stage = bb.layer4
        first = stage[0]
        if first.downsample is not None and not isinstance(first.downsample, nn.Module):
            raise ValueError("dilate_last_stage needs ResNet shortcut_type 'B' (a strided 1x1 conv shortcut)")
    else:  # the last transition stops pooling, the last dense block is dilated (any block_config length)
        names = [n for n, _ in bb.features.named_children()]
        transitions = [n for n in names if n.startswith("transition")]
        if not transitions:
            raise ValueError("dilate_last_stage needs a DenseNet with at least two dense blocks")
        getattr(bb.features, transitions[-1]).pool = nn.Identity()
        stage = getattr(bb.features, [n for n in names if n.startswith("denseblock")][-1])
    for m in stage.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            if max(m.stride) > 1:
                m.stride = (1,) * len(m.stride)  # the block that used to down-sample keeps dilation 1
            elif max(m.kernel_size) > 1:
                m.dilation = (2,) * len(m.dilation)
                m.padding = tuple(2 * (k // 2) for k in m.kernel_size)
    model.dilate_last_stage = True


def build_classifier(
    arch: str,
    spatial_dims: int = 2,
    in_channels: int = 1,
    num_classes: int = 1,
    image_size: int | Sequence[int] | None = None,
    *,
    stem: str = "auto",
    width: int | None = None,
    dropout: float = 0.0,
    pretrained: str | os.PathLike | None = None,
    skip_head: bool = False,
    freeze: str = "none",
    label_names: Sequence[str] | None = None,
    thresholds: float | Sequence[float] | None = None,
    conv: str = "standard",
    inflate: str | None = None,
    dilate_last_stage: bool | str = False,
    settings: Mapping[str, Any] | None = None,
    **arch_kwargs: Any,
) -> Classifier:
    """Build an image classifier returning logits ``(B, num_classes)`` for inputs ``(B, C, H, W[, D])``.

    Args:
        arch: one of :data:`ARCHS` (``densenet121/169/201``, ``resnet18/34/50/101/152``, ``vit``).
        spatial_dims: 2 (images) or 3 (volumes).
        in_channels: input channels ``C``.
        num_classes: number of logits.
        image_size: input size (int or one per spatial dim). Drives ``stem="auto"`` and the ViT patch grid;
            required for ``vit`` (whose input must then have exactly this size). CNNs accept other sizes at
            run time; without it ``stem="auto"`` means ``"standard"``.
        stem: CNN stem: ``"small"`` (3x3 conv stride 1, no pooling: total stride 1), ``"medium"`` (3x3 conv
            stride 2, no pooling: stride 2), ``"standard"`` (7x7 conv stride 2 + max-pool: stride 4) or ``"auto"``
            (by input size, see :func:`choose_stem`). Must be ``"auto"`` for ``vit``.
        width: base width: ResNet stage widths are ``[w, 2w, 4w, 8w]`` (default 64, MONAI's), DenseNet
            ``init_features`` (default 64). Not for ``vit`` (use ``hidden_size``).
        dropout: dropout rate on the pooled features before the head.
        pretrained: where the weights start from (``None`` or ``""``: random initialisation): a name of
            :data:`medclass.networks.WEIGHTS` (``"torchvision:resnet18"``, ``"xrv:densenet121-res224-all"``,
            ``"medicalnet:resnet18"`` ...; downloaded once, checksum verified) or a file: a medclass checkpoint, a
            plain MONAI network state, or torchvision / timm / TorchXRayVision / MedicalNet weights recognised from
            their keys. Loaded by :func:`medclass.networks.load_pretrained`; a published source fixes the
            architecture arguments it needs (``None`` width and ``"auto"`` stem / patch size take them, explicit
            contradicting values are errors) and folds its preprocessing into the first layer.
        skip_head: with ``pretrained``, do not load the head (and thresholds, label names): start a new label set.
        freeze: ``"none"``, ``"backbone"`` (train the head only) or ``"stages:N"`` (the first N stages frozen, see
            :func:`medclass.networks.freeze`); frozen BatchNorm layers keep their statistics.
        label_names: one name per class (default ``class_0 ..``).
        thresholds: decision thresholds on probabilities, a float or one per class (default 0.5).
        conv: ``"standard"`` or, for 3D densenet*/resnet*, ``"acs"``: every 3D convolution with a kernel > 1 becomes
            an :class:`~medclass.networks.ACSConv` (2D kernels applied in the axial, coronal and sagittal planes,
            weights stored 2D-shaped; MedMNIST v2's ACS baseline), see :func:`~medclass.networks.convert_to_acs`.
        inflate: for 3D models, ``pretrained`` is a 2D checkpoint of the same arch/width/stem to inflate:
            ``"i3d"`` (kernels repeated along depth / kD), ``"center"`` (kernel in the central depth slice) or
            ``"acs"`` (1:1 into ``conv="acs"``), see :func:`~medclass.networks.inflate_2d_to_3d`. A 2D checkpoint
            for a 3D model without ``inflate`` is refused. ``None`` or ``""``: no inflation.
        dilate_last_stage: CNNs: the last stage does not down-sample (dilated convolutions instead), so its
            feature grid is twice as fine per side (e.g. 6^3 instead of 3^3 at 48^3) for about 1.3x (2D) / 1.7x
            (3D) the training step time of ResNet-18. Same weights. DenseNet's Grad-CAM is computed on that grid;
            ResNet's on ``layer3`` (already that fine), where the dilated model still scored higher (benchmarks).
            ``"auto"``: dilate where the last grid would otherwise have fewer than :data:`MIN_CAM_GRID` cells on
            a side (a 2^3 grid cannot even put a map's peak at the centre of the volume); ViT: never.
        settings: workflow settings recorded with the model (``task``, ``preset``, ``preset_options``), so that
            evaluation and inference read them from the model file (:mod:`medclass.networks.modelfile`).
        **arch_kwargs: passed to the MONAI constructor, e.g. ``growth_rate``/``block_config``/``dropout_prob``
            (DenseNet), ``layers``/``shortcut_type``/``act``/``norm`` (ResNet), ``patch_size``/``hidden_size``/
            ``mlp_dim``/``num_layers``/``num_heads``/``proj_type``/``pos_embed_type``/``dropout_rate``/
            ``qkv_bias`` (ViT; defaults 384/1536/8/6 sized for CPUs; ``mlp_dim`` 4x ``hidden_size`` when only that is given;
            ``None`` / ``"auto"`` ViT settings are left to these defaults).

    Returns:
        A :class:`Classifier` (``DenseNetClassifier``, ``ResNetClassifier`` or ``ViTClassifier``).

    Raises:
        ValueError: unknown arch/stem/conv/inflate, bad sizes, image too small for the chosen stem, ViT patch size
            that does not divide ``image_size``, unreadable/mismatching ``pretrained`` checkpoint, ``conv="acs"``
            or ``inflate`` for a 2D model or a ViT.
        TypeError: wrongly typed arguments, or ``arch_kwargs`` the factory sets itself.
        FileNotFoundError: ``pretrained`` does not exist.
    """
    return build(ClassifierSpec(
        arch, spatial_dims, in_channels, num_classes, image_size, stem=stem, width=width, dropout=dropout,
        pretrained=pretrained, skip_head=skip_head, freeze=freeze, label_names=label_names, thresholds=thresholds,
        conv=conv, inflate=inflate, dilate_last_stage=dilate_last_stage, arch_kwargs=arch_kwargs,
        settings=settings or {},
    ))


def build(spec: ClassifierSpec) -> Classifier:
    """Build the classifier ``spec`` describes (see :func:`build_classifier` for what each setting does).

    Raises:
        ValueError: the image is too small for the chosen stem, a ViT patch size that does not divide
            ``image_size``, an unreadable / mismatching ``pretrained`` checkpoint.
        TypeError: ``arch_kwargs`` the factory sets itself.
        FileNotFoundError: ``pretrained`` does not exist.
    """
    arch, spatial_dims, in_channels, num_classes = spec.arch, spec.spatial_dims, spec.in_channels, spec.num_classes
    size, stem, width, inflate = spec.image_size, spec.stem, spec.width, spec.inflate
    arch_kwargs = dict(spec.arch_kwargs)
    source = None
    if spec.pretrained is not None:
        source = inspect_pretrained(spec.pretrained)
        width, stem, arch_kwargs = architecture_args(
            source, arch=arch, spatial_dims=spatial_dims, width=width, stem=stem, image_size=size, inflate=inflate,
            arch_kwargs=arch_kwargs,
        )
    common = dict(
        arch=arch,
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        num_classes=num_classes,
        image_size=size,
        dropout=spec.dropout,
        label_names=spec.label_names,
        thresholds=spec.thresholds,
    )

    model: Classifier
    if arch.startswith("vit"):
        _check_reserved("vit", arch_kwargs)
        if size is None:
            raise ValueError("image_size is required for arch='vit' (it fixes the patch grid)")
        if stem != "auto":
            raise ValueError(f"stem={stem!r} does not apply to arch='vit' (patch embedding); leave it 'auto'")
        if width is not None:
            raise ValueError("width does not apply to arch='vit': pass hidden_size (and mlp_dim, num_heads)")
        patch = arch_kwargs.pop("patch_size", None)
        if patch is None:
            patch_size = choose_patch_size(size, spatial_dims)
        else:
            try:
                patch_size = normalize_image_size(patch, spatial_dims)
            except (TypeError, ValueError) as e:
                raise ValueError(f"patch_size {patch!r} is invalid: {e}") from e
            bad = [(s, p) for s, p in zip(size, patch_size) if s % p]
            if bad:
                raise ValueError(
                    f"image_size {size} is not divisible by patch_size {patch_size} (side, patch: {bad}); "
                    "resize/crop the images or choose another patch_size"
                )
        vit_kwargs = {**_VIT_ARCHS[arch], **arch_kwargs}
        backbone = ViT(
            in_channels=in_channels,
            img_size=size,
            patch_size=patch_size,
            classification=True,
            num_classes=num_classes,
            spatial_dims=spatial_dims,
            post_activation=None,
            **vit_kwargs,
        )
        if arch in _VIT_LN_EPS:
            for m in backbone.modules():
                if isinstance(m, nn.LayerNorm):
                    m.eps = _VIT_LN_EPS[arch]
        n_tokens = math.prod(s // p for s, p in zip(size, patch_size))
        if n_tokens > 4096:
            logger.warning("vit with image_size %s and patch_size %s has %d tokens: slow", size, patch_size, n_tokens)
        model = ViTClassifier(backbone, patch_size=patch_size, stem="patch", stem_stride=1, width=None, **common)
        model.arch_kwargs = _recorded_kwargs(vit_kwargs)
    else:
        family = spec.family
        _check_reserved(family, arch_kwargs)
        recorded = _recorded_kwargs(arch_kwargs)  # before _build_resnet takes "layers" out
        if stem == "auto":
            if size is None:
                logger.info("build_classifier(%s): no image_size given, stem 'auto' falls back to 'standard'", arch)
                stem = "standard"
            else:
                stem = choose_stem(size, spatial_dims)
        w = 64 if width is None else width
        if family == "densenet":
            if size is not None and min(densenet_feature_size(s, stem) for s in size) < 1:
                need = next(s for s in range(1, 1024) if densenet_feature_size(s, stem) >= 1)
                raise ValueError(
                    f"image_size {size} is too small for {arch} with stem={stem!r} (each side needs >= {need}); "
                    "use stem='auto', 'small' or 'medium'"
                )
            backbone = _build_densenet(arch, spatial_dims, in_channels, num_classes, stem, w, arch_kwargs)
            model = DenseNetClassifier(backbone, stem=stem, stem_stride=STEM_STRIDE[stem], width=w, **common)
        else:
            backbone = _build_resnet(arch, spatial_dims, in_channels, num_classes, stem, w, arch_kwargs)
            model = ResNetClassifier(backbone, stem=stem, stem_stride=STEM_STRIDE[stem], width=w, **common)
        dilate_last_stage = spec.dilate_last_stage
        if dilate_last_stage == "auto":
            feature_size = densenet_feature_size if family == "densenet" else resnet_feature_size
            dilate_last_stage = size is not None and min(feature_size(s, stem) for s in size) < MIN_CAM_GRID
        model.arch_kwargs = recorded
        if dilate_last_stage:
            _dilate_last_stage(model, family)
        if spec.conv == "acs":
            convert_to_acs(model)
        elif spatial_dims == 3:
            make_small_3d_convs_safe(model)

    model.settings = dict(spec.settings)
    logger.info(
        "built %s (%dD, %d->%d, image_size=%s, stem=%s, conv=%s%s): %.2fM parameters",
        arch,
        spatial_dims,
        in_channels,
        num_classes,
        size,
        model.stem,
        model.conv,
        ", dilated last stage" if model.dilate_last_stage else "",
        num_params(model) / 1e6,
    )
    if source is not None:
        load_pretrained(model, source, skip_head=spec.skip_head, inflate=inflate)
    else:
        if spec.skip_head:
            logger.warning("build_classifier: skip_head=True has no effect without pretrained")
        if inflate is not None:
            logger.warning("build_classifier: inflate=%r has no effect without pretrained", inflate)
    if spec.freezes:
        if source is None:
            logger.warning("build_classifier: freeze=%r freezes randomly initialised weights (no pretrained)",
                           spec.freeze)
        freeze_stages(model, spec.freeze)
    return model

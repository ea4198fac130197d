"""What a classifier is: the architectures, stems and convolutions medclass builds, the input-size rules that
choose a stem or a ViT patch size, and :class:`ClassifierSpec`, the validated description
:func:`medclass.networks.build_classifier` builds a network from."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from medclass.networks.finetune import parse_freeze
from medclass.networks.inflate import check_inflate_mode
from medclass.vocab import VIT_SETTINGS, optional

__all__ = [
    "ARCHS", "CONVS", "MIN_CAM_GRID", "STEMS", "STEM_STRIDE", "ClassifierSpec", "after_stem", "check_pos_int",
    "choose_patch_size", "choose_stem", "densenet_feature_size", "family", "is_int", "normalize_image_size",
    "resnet_feature_size", "vit_arguments",
]

ARCHS: tuple[str, ...] = (
    "densenet121",
    "densenet169",
    "densenet201",
    "resnet10",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "vit",
    "vit_small",
    "vit_base",
)
"""Architectures accepted by :func:`build_classifier` (``vit_small`` / ``vit_base``: ViT-S/B, 12 blocks, qkv bias and
LayerNorm eps 1e-6 as timm and torchvision build them, for their pretrained weights)."""

STEMS: tuple[str, ...] = ("auto", "small", "medium", "standard")
"""Stem choices; see :func:`choose_stem`."""

STEM_STRIDE: dict[str, int] = {"small": 1, "medium": 2, "standard": 4}
"""Total down-sampling of each stem."""

CONVS: tuple[str, ...] = ("standard", "acs")
"""Convolution choices of 3D CNNs: plain ``Conv3d`` or ACS convolutions (:class:`medclass.networks.ACSConv`)."""

MIN_CAM_GRID = 4
"""``dilate_last_stage="auto"`` dilates CNNs whose last feature grid would have fewer cells than this on a side."""

# (small, medium) upper bounds of the min spatial side for stem="auto"
_AUTO_STEM_BOUNDS = {2: (48, 128), 3: (16, 64)}
_VIT_GRID_RANGE = (7, 16)  # preferred patches per side
_VIT_MAX_AUTO_PATCH = 16


def is_int(v: Any) -> bool:
    """An int that is not a bool."""
    return isinstance(v, int) and not isinstance(v, bool)


def check_pos_int(name: str, v: Any) -> int:
    """``v`` when it is a positive int, else ``ValueError`` naming ``name``."""
    if not is_int(v) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return int(v)


def normalize_image_size(image_size: int | Sequence[int], spatial_dims: int) -> tuple[int, ...]:
    """An int or a sequence of ``spatial_dims`` positive ints as a tuple.

    Raises:
        ValueError: wrong length or non-positive sizes.
        TypeError: not an int or a sequence of ints.
    """
    if is_int(image_size):
        size: tuple[int, ...] = (int(image_size),) * spatial_dims
    elif isinstance(image_size, Sequence) and not isinstance(image_size, str):
        if not all(is_int(s) for s in image_size):
            raise TypeError(f"image_size must hold ints, got {image_size!r}")
        size = tuple(int(s) for s in image_size)
    else:
        raise TypeError(f"image_size must be an int or a sequence of ints, got {image_size!r}")
    if len(size) != spatial_dims:
        raise ValueError(f"image_size {image_size!r} has {len(size)} values but spatial_dims is {spatial_dims}")
    if any(s < 1 for s in size):
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return size


def choose_stem(image_size: int | Sequence[int], spatial_dims: int = 2) -> str:
    """The stem ``stem="auto"`` picks for an input size (by the smallest spatial side ``s``).

    2D: ``s <= 48`` small (stride 1), ``s <= 128`` medium (stride 2), else standard (stride 4).
    3D (cost is cubic): ``s <= 16`` small, ``s <= 64`` medium, else standard.

    Args:
        image_size: input size, int or one per spatial dim.
        spatial_dims: 2 or 3.

    Returns:
        ``"small"``, ``"medium"`` or ``"standard"``.
    """
    if spatial_dims not in _AUTO_STEM_BOUNDS:
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    s = min(normalize_image_size(image_size, spatial_dims))
    small, medium = _AUTO_STEM_BOUNDS[spatial_dims]
    if s <= small:
        return "small"
    if s <= medium:
        return "medium"
    return "standard"


def _patch_for_sides(sides: Sequence[int], lo: int, hi: int) -> int | None:
    """Largest patch size <= 16 dividing every side with a grid in [lo, hi] per side (else the smallest such > 16)."""
    common = None
    for s in sides:
        cands = {p for p in range(1, s + 1) if s % p == 0 and lo <= s // p <= hi}
        common = cands if common is None else common & cands
    if not common:
        return None
    small = [p for p in common if p <= _VIT_MAX_AUTO_PATCH]
    return max(small) if small else min(common)


def choose_patch_size(image_size: int | Sequence[int], spatial_dims: int = 2) -> tuple[int, ...]:
    """ViT patch size for an input size: a grid of about 7-16 patches per side.

    The largest patch size <= 16 that divides a side and leaves 7..16 patches along it (28 -> 4, 64 -> 8,
    96 -> 12, 224 -> 16), the same for all sides where one fits them all (64x96 -> 8), else chosen per side.
    Where no divisor gives 7..16 patches, a grid of 4..32 is accepted (closest to the preferred range).

    Raises:
        ValueError: a side has no usable divisor (e.g. a prime such as 31): pass ``patch_size`` or resize.
    """
    size = normalize_image_size(image_size, spatial_dims)
    p = _patch_for_sides(size, *_VIT_GRID_RANGE)
    if p is not None:
        return (p,) * len(size)
    out = []
    for s in size:
        q = _patch_for_sides([s], *_VIT_GRID_RANGE)
        if q is None:
            cands = [d for d in range(1, s + 1) if s % d == 0 and 4 <= s // d <= 32]
            if not cands:
                raise ValueError(
                    f"cannot choose a ViT patch size for image_size {size}: side {s} has no divisor leaving 4-32 "
                    "patches; pass patch_size=... or resize the images"
                )
            lo, hi = _VIT_GRID_RANGE
            q = min(cands, key=lambda d: abs(math.log((s // d) / (lo if s // d < lo else hi))))
        out.append(q)
    return tuple(out)


def after_stem(side: int, stem: str) -> int:
    """Side after a CNN stem: each stride-2 step (7x7/3x3 conv or 3x3 max-pool, padded) rounds up."""
    for _ in range(STEM_STRIDE[stem].bit_length() - 1):
        side = (side - 1) // 2 + 1
    return side


def densenet_feature_size(side: int, stem: str) -> int:
    """Spatial size of a DenseNet's final feature map along one side."""
    side = after_stem(side, stem)
    for _ in range(3):  # transitions: 2x2 average pooling, stride 2 (rounds down)
        side //= 2
    return side


def resnet_feature_size(side: int, stem: str) -> int:
    """Side of ResNet's last feature map (``layer4``) for an input side and stem."""
    side = after_stem(side, stem)
    for _ in range(3):  # layer2..layer4: 3x3 conv stride 2, padding 1 (rounds up)
        side = (side - 1) // 2 + 1
    return side


def _check_conv_inflate(arch: str, spatial_dims: int, conv: Any, inflate: Any) -> None:
    """Validate ``conv`` and ``inflate`` of :func:`build_classifier`."""
    if conv not in CONVS:
        raise ValueError(f"unknown conv {conv!r}: expected one of {CONVS}")
    if conv == "acs" and (spatial_dims != 3 or arch.startswith("vit")):
        raise ValueError(
            f"conv='acs' is for 3D densenet*/resnet* models, got arch={arch!r} with spatial_dims={spatial_dims}"
        )
    if inflate is None:
        return
    check_inflate_mode(inflate)
    if spatial_dims != 3 or arch.startswith("vit"):
        raise ValueError(
            f"inflate={inflate!r} starts a 3D densenet*/resnet* from a 2D checkpoint; got arch={arch!r} with "
            f"spatial_dims={spatial_dims}"
        )
    if inflate == "acs" and conv != "acs":
        raise ValueError("inflate='acs' loads 2D kernels 1:1 into ACS convolutions: also pass conv='acs'")


def family(arch: str) -> str:
    """``"vit"``, ``"densenet"`` or ``"resnet"``."""
    return "vit" if arch.startswith("vit") else "densenet" if arch.startswith("densenet") else "resnet"


def vit_arguments(arch: str, arch_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``arch_kwargs`` without the ViT settings left at their "not given" value (``None``, ``"auto"``, ``"null"``:
    what a bundle passes for every architecture), ``mlp_dim`` derived as 4x ``hidden_size`` where only that is given.

    Raises:
        ValueError: a ViT setting given for a CNN.
    """
    out = dict(arch_kwargs)
    for key in VIT_SETTINGS:
        if key in out and (optional(out[key]) is None or (isinstance(out[key], str) and out[key].lower() == "auto")):
            del out[key]
    given = sorted(k for k in VIT_SETTINGS if k in out)
    if given and not arch.startswith("vit"):
        raise ValueError(f"{', '.join(given)} appl{'y' if len(given) > 1 else 'ies'} to arch='vit' only, got "
                         f"arch={arch!r}; leave {given[0]} null")
    if "hidden_size" in out and "mlp_dim" not in out:
        out["mlp_dim"] = 4 * int(out["hidden_size"])
    return out


@dataclass(frozen=True)
class ClassifierSpec:
    """A classifier to build, checked on construction: the arguments of :func:`medclass.networks.build_classifier`
    (see there for each), with ``arch_kwargs`` the MONAI constructor's extra arguments and ``settings`` the
    workflow settings recorded with the model (``task``, ``preset``, ``preset_options``; not used to build it).

    Normalised: ``arch`` in lower case, ``image_size`` a tuple of ``spatial_dims`` ints (or ``None``),
    ``pretrained`` / ``inflate`` ``None`` for ``""``, ``dropout`` a float.

    Raises:
        ValueError: unknown arch / stem / conv / inflate / freeze, bad sizes or rates, ``conv="acs"`` or ``inflate``
            for a 2D model or a ViT, ``dilate_last_stage=True`` for a ViT.
        TypeError: wrongly typed arguments.
    """

    arch: str
    spatial_dims: int = 2
    in_channels: int = 1
    num_classes: int = 1
    image_size: int | Sequence[int] | None = None
    stem: str = "auto"
    width: int | None = None
    dropout: float = 0.0
    pretrained: str | os.PathLike | None = None
    skip_head: bool = False
    freeze: str = "none"
    label_names: Sequence[str] | None = None
    thresholds: float | Sequence[float] | None = None
    conv: str = "standard"
    inflate: str | None = None
    dilate_last_stage: bool | str = False
    arch_kwargs: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        arch = self.arch
        if not isinstance(arch, str):
            raise TypeError(f"arch must be a string, one of {ARCHS}, got {arch!r}")
        arch = arch.lower()
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}: expected one of {ARCHS}")
        spatial_dims = self.spatial_dims
        if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        check_pos_int("in_channels", self.in_channels)
        check_pos_int("num_classes", self.num_classes)
        if self.stem not in STEMS:
            raise ValueError(f"unknown stem {self.stem!r}: expected one of {STEMS}")
        width = optional(self.width)  # "null" / "none" as a command line passes them
        if width is not None:
            check_pos_int("width", width)
        dropout = self.dropout
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a float in [0, 1), got {dropout!r}")
        size = normalize_image_size(self.image_size, spatial_dims) if self.image_size is not None else None
        inflate = None if self.inflate == "" else self.inflate  # "" = none, as for pretrained (bundle configs)
        _check_conv_inflate(arch, spatial_dims, self.conv, inflate)
        dilate = self.dilate_last_stage
        if isinstance(dilate, str) and dilate.lower() in ("true", "false"):
            dilate = dilate.lower() == "true"
        if not isinstance(dilate, bool) and dilate != "auto":
            raise TypeError(f"dilate_last_stage must be True, False or 'auto', got {dilate!r}")
        if dilate is True and arch.startswith("vit"):
            raise ValueError("dilate_last_stage applies to CNNs (densenet*/resnet*), not to arch='vit'")
        if self.freeze not in (None, "none", ""):
            parse_freeze(self.freeze)
        pretrained = None if self.pretrained is None or str(self.pretrained) == "" else self.pretrained
        arch_kwargs = vit_arguments(arch, self.arch_kwargs)
        for name, value in (("arch", arch), ("image_size", size), ("inflate", inflate), ("dropout", float(dropout)),
                            ("pretrained", pretrained), ("arch_kwargs", arch_kwargs),
                            ("settings", dict(self.settings or {})), ("width", width),
                            ("dilate_last_stage", dilate)):
            object.__setattr__(self, name, value)

    @property
    def family(self) -> str:
        """``"vit"``, ``"densenet"`` or ``"resnet"``."""
        return family(self.arch)

    @property
    def freezes(self) -> bool:
        """Whether some weights are to be frozen."""
        return self.freeze not in (None, "none", "")

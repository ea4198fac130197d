"""Preset transform pipelines (``cxr``, ``generic``) and their registry.

A pipeline is::

    ReadImaged -> LabelToTensord -> intensity scaling to [0, 1] -> [pre_resize hook] -> AdaptiveResized
    ---- deterministic above (MONAI CacheDataset caches it), random below ----
    [train only] RandFlipd (last axis) -> RandAffined -> RandAdjustContrastd
    -> NormalizeIntensityd ((x - 0.5) / 0.25) -> EnsureTyped (image float32 MetaTensor)

Output per item: ``image`` a ``float32`` :class:`monai.data.MetaTensor` of shape ``(1, *image_size)``
(about ``[-2, 2]`` after the fixed normalisation), ``label`` a ``float32`` tensor ``(C,)`` with NaN
for unknown; every other field of the item (``id``, ``patient_id``, ...) passes through untouched.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from monai.transforms import (
    Compose,
    EnsureTyped,
    NormalizeIntensityd,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    Transform,
)
from monai.transforms.traits import RandomizableTrait

from medclass.transforms.array import AdaptiveResized, LabelToTensord, RobustScaleIntensityd
from medclass.transforms.io import ReadImaged

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_AUGMENT",
    "Preset",
    "PRESETS",
    "register_preset",
    "resolve_augment",
    "build_transforms",
    "first_random_index",
    "transform_error",
]

#: Training augmentation defaults (a preset's ``augment`` and the ``augment`` argument override them).
DEFAULT_AUGMENT: dict[str, Any] = {
    "flip_prob": 0.5,  # RandFlip along the last (left-right) axis
    "rotate_deg": 10.0,  # RandAffine rotation range +-degrees (about every axis in 3D)
    "zoom": 0.1,  # RandAffine scale range +-fraction
    "translate": 0.05,  # RandAffine translation range +-fraction of the image size
    "contrast_gamma": (0.8, 1.25),  # RandAdjustContrast gamma range, None to disable
    "prob": 0.5,  # probability of RandAffine and RandAdjustContrast
    "affine_prob": None,  # overrides "prob" for RandAffine
    "contrast_prob": None,  # overrides "prob" for RandAdjustContrast
    "padding_mode": "zeros",  # RandAffine padding: "zeros", "border" or "reflection"
}
_AUGMENT_KEYS = frozenset(DEFAULT_AUGMENT) | {"enabled"}


@dataclass(frozen=True)
class Preset:
    """How :func:`build_transforms` builds one kind of pipeline.

    Attributes:
        name: registry key.
        description: one line for listings.
        voi: apply DICOM VOI LUT / window center-width when reading.
        percentiles: ``(lower, upper)`` for per-image robust scaling to ``[0, 1]``; ignored when
            ``intensity`` is given.
        intensity: optional ``f(image_key, spatial_dims) -> list[Transform]`` replacing the percentile
            scaling (e.g. a fixed CT HU window); must map intensities to about ``[0, 1]``.
        pre_resize: optional ``f(image_key, spatial_dims) -> list[Transform]`` of deterministic
            transforms run before the resize (e.g. orientation / spacing for 3D).
        augment: overrides of :data:`DEFAULT_AUGMENT` for this preset.
        normalize: ``(subtrahend, divisor)`` of the final fixed normalisation.
        spatial_dims: the spatial dims this preset supports.
    """

    name: str
    description: str = ""
    voi: bool = True
    percentiles: tuple[float, float] = (0.5, 99.5)
    intensity: Callable[[str, int], list[Transform]] | None = None
    pre_resize: Callable[[str, int], list[Transform]] | None = None
    augment: Mapping[str, Any] = field(default_factory=dict)
    normalize: tuple[float, float] = (0.5, 0.25)
    spatial_dims: tuple[int, ...] = (2, 3)


#: Registered presets by name; add more with :func:`register_preset`.
PRESETS: dict[str, Preset] = {}


def register_preset(preset: Preset, overwrite: bool = False) -> Preset:
    """Add ``preset`` to :data:`PRESETS` (``ValueError`` if the name exists and not ``overwrite``)."""
    if not isinstance(preset, Preset):
        raise TypeError(f"expected a Preset, got {type(preset).__name__}")
    if preset.name in PRESETS and not overwrite:
        raise ValueError(f"preset {preset.name!r} already registered; pass overwrite=True to replace it")
    unknown = set(preset.augment) - _AUGMENT_KEYS
    if unknown:
        raise ValueError(
            f"preset {preset.name!r}: unknown augment keys {sorted(unknown)}; allowed {sorted(_AUGMENT_KEYS)}"
        )
    PRESETS[preset.name] = preset
    return preset


register_preset(
    Preset(
        name="cxr",
        description="chest X-ray: DICOM window + MONOCHROME1 inversion, 0.5/99.5 percentile scaling, flip/affine/gamma",
        voi=True,
        percentiles=(0.5, 99.5),
    )
)
register_preset(
    Preset(
        name="generic",
        description="any 2D/3D image: raw modality values (no DICOM window), min-max scaling, flip/affine, no gamma",
        voi=False,
        percentiles=(0.0, 100.0),
        augment={"contrast_gamma": None},
    )
)


def _prob(cfg: Mapping[str, Any], key: str) -> float:
    v = cfg[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
        raise ValueError(f"augment[{key!r}] must be a probability in [0, 1], got {v!r}")
    return float(v)


def _nonneg(cfg: Mapping[str, Any], key: str, upper: float) -> float:
    v = cfg[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) < upper:
        raise ValueError(f"augment[{key!r}] must be a number in [0, {upper}), got {v!r}")
    return float(v)


def resolve_augment(augment: Mapping[str, Any] | bool | None, preset: Preset | str = "cxr") -> dict[str, Any] | None:
    """Merge :data:`DEFAULT_AUGMENT`, the preset's overrides and ``augment``; validate.

    Args:
        augment: ``None`` / ``True`` for the defaults, ``False`` or ``{"enabled": False}`` for none,
            or a dict overriding any of :data:`DEFAULT_AUGMENT`'s keys.
        preset: a :class:`Preset` or registered name.

    Returns:
        The full, validated settings (``affine_prob`` / ``contrast_prob`` filled in), or ``None``
        when augmentation is disabled.
    """
    p = _get_preset(preset)
    if augment is False:
        return None
    if augment is None or augment is True:
        augment = {}
    if not isinstance(augment, Mapping):
        raise TypeError(f"augment must be a dict, True, False or None, got {type(augment).__name__}")
    unknown = set(augment) - _AUGMENT_KEYS
    if unknown:
        raise ValueError(f"unknown augment keys {sorted(unknown)}; allowed {sorted(_AUGMENT_KEYS)}")
    if not augment.get("enabled", True):
        return None
    cfg = {**DEFAULT_AUGMENT, **dict(p.augment), **{k: v for k, v in augment.items() if k != "enabled"}}
    cfg["flip_prob"] = _prob(cfg, "flip_prob")
    cfg["prob"] = _prob(cfg, "prob")
    for k in ("affine_prob", "contrast_prob"):
        cfg[k] = cfg["prob"] if cfg[k] is None else _prob(cfg, k)
    cfg["rotate_deg"] = _nonneg(cfg, "rotate_deg", 180.0)
    cfg["zoom"] = _nonneg(cfg, "zoom", 1.0)
    cfg["translate"] = _nonneg(cfg, "translate", 1.0)
    g = cfg["contrast_gamma"]
    if g is not None:
        if isinstance(g, (int, float)) and not isinstance(g, bool):
            g = (float(g), float(g))
        if (
            not isinstance(g, Sequence)
            or len(g) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in g)
            or not 0.0 < float(g[0]) <= float(g[1])
        ):
            raise ValueError(f"augment['contrast_gamma'] must be (low, high) with 0 < low <= high, or None; got {g!r}")
        cfg["contrast_gamma"] = (float(g[0]), float(g[1]))
    if cfg["padding_mode"] not in ("zeros", "border", "reflection"):
        raise ValueError(
            f"augment['padding_mode'] must be 'zeros', 'border' or 'reflection', got {cfg['padding_mode']!r}"
        )
    return cfg


def _get_preset(preset: Preset | str) -> Preset:
    if isinstance(preset, Preset):
        return preset
    if not isinstance(preset, str):
        raise TypeError(f"preset must be a name or a Preset, got {type(preset).__name__}")
    try:
        return PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}; registered presets: {sorted(PRESETS)}") from None


def _image_size(image_size: Sequence[int] | int | None, spatial_dims: int) -> tuple[int, ...] | None:
    if image_size is None:
        return None
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        image_size = (image_size,) * spatial_dims
    try:
        size = tuple(image_size)
    except TypeError:
        raise TypeError(f"image_size must be an int or a sequence of ints, got {image_size!r}") from None
    if len(size) != spatial_dims or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise ValueError(
            f"image_size must be {spatial_dims} positive ints for spatial_dims={spatial_dims}, got {image_size!r}"
        )
    return size


def build_transforms(
    preset: str | Preset = "cxr",
    spatial_dims: int = 2,
    image_size: Sequence[int] | int | None = (224, 224),
    train: bool = False,
    image_key: str = "image",
    label_key: str = "label",
    augment: Mapping[str, Any] | bool | None = None,
    id_key: str = "id",
) -> Compose:
    """Build the item transform for a datalist of ``{"image": path | array, "label": (C,), "id": str, ...}``.

    Args:
        preset: a registered name (see :data:`PRESETS`: ``"cxr"``, ``"generic"``) or a :class:`Preset`.
        spatial_dims: 2 (radiographs, slices) or 3 (volumes).
        image_size: output spatial shape ``(H, W)`` / ``(D, H, W)`` (an int is repeated); ``None``
            keeps the native size (items then only collate when they share a size).
        train: add random augmentation (see :data:`DEFAULT_AUGMENT`).
        image_key: the item key holding the image path or array.
        label_key: the item key holding the label; items without it pass (inference).
        augment: ``None``/``True`` (defaults), ``False`` / ``{"enabled": False}`` (none) or a dict of
            overrides; only used when ``train``.
        id_key: the item key naming array images in metadata and errors.

    Returns:
        A :class:`monai.transforms.Compose` whose leading deterministic transforms (up to
        :func:`first_random_index`) are what :class:`monai.data.CacheDataset` caches. Output:
        ``image`` ``float32`` MetaTensor ``(1, *image_size)``, ``label`` ``float32`` tensor ``(C,)``.
    """
    if isinstance(spatial_dims, bool) or spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    p = _get_preset(preset)
    if spatial_dims not in p.spatial_dims:
        raise ValueError(f"preset {p.name!r} supports spatial_dims {p.spatial_dims}, got {spatial_dims}")
    size = _image_size(image_size, spatial_dims)
    keys = [image_key]

    xforms: list[Transform] = [
        ReadImaged(keys=keys, spatial_dims=spatial_dims, voi=p.voi, id_key=id_key),
        LabelToTensord(keys=[label_key], allow_missing_keys=True),
    ]
    if p.intensity is not None:
        xforms += list(p.intensity(image_key, spatial_dims))
    else:
        xforms.append(RobustScaleIntensityd(keys, lower=p.percentiles[0], upper=p.percentiles[1]))
    if p.pre_resize is not None:
        xforms += list(p.pre_resize(image_key, spatial_dims))
    if size is not None:
        xforms.append(AdaptiveResized(keys, spatial_size=size))

    cfg = resolve_augment(augment, p) if train else None
    if cfg is not None:
        if cfg["flip_prob"] > 0:
            xforms.append(RandFlipd(keys, prob=cfg["flip_prob"], spatial_axis=spatial_dims - 1))
        if cfg["affine_prob"] > 0 and (cfg["rotate_deg"] > 0 or cfg["zoom"] > 0 or cfg["translate"] > 0):
            rot = math.radians(cfg["rotate_deg"])
            rotate_range = (rot,) if spatial_dims == 2 else (rot, rot, rot)
            translate_range = (
                tuple(cfg["translate"] * s for s in size) if size is not None else None
            )
            if size is None and cfg["translate"] > 0:
                logger.warning("image_size=None: translation augmentation disabled (no fixed size to scale it by)")
            xforms.append(
                RandAffined(
                    keys,
                    prob=cfg["affine_prob"],
                    rotate_range=rotate_range if rot > 0 else None,
                    scale_range=(cfg["zoom"],) * spatial_dims if cfg["zoom"] > 0 else None,
                    translate_range=translate_range if cfg["translate"] > 0 else None,
                    spatial_size=size,
                    mode="bilinear",
                    padding_mode=cfg["padding_mode"],
                    cache_grid=size is not None,
                )
            )
        if cfg["contrast_gamma"] is not None and cfg["contrast_prob"] > 0 and cfg["contrast_gamma"] != (1.0, 1.0):
            xforms.append(RandAdjustContrastd(keys, prob=cfg["contrast_prob"], gamma=cfg["contrast_gamma"]))
    sub, div = p.normalize
    xforms.append(NormalizeIntensityd(keys, subtrahend=float(sub), divisor=float(div)))
    xforms.append(EnsureTyped(keys, data_type="tensor", dtype=torch.float32))
    logger.debug(
        "built %s pipeline (spatial_dims=%d, image_size=%s, train=%s): %s",
        p.name, spatial_dims, size, train, [type(t).__name__ for t in xforms],
    )
    return Compose(xforms)


def first_random_index(compose: Compose) -> int:
    """Index of the first random (or non-``Transform``) step: what :class:`monai.data.CacheDataset` caches up to.

    Returns ``len(compose.transforms)`` when every step is deterministic.
    """
    idx = compose.get_index_of_first(lambda t: isinstance(t, RandomizableTrait) or not isinstance(t, Transform))
    return len(compose.transforms) if idx is None else int(idx)


def transform_error(exc: BaseException) -> BaseException | None:
    """The user-facing error behind MONAI's ``RuntimeError("applying transform ...")`` wrappers.

    MONAI's ``Compose`` / ``Dataset`` re-raise any error from a transform as ``RuntimeError`` chained
    (``__cause__``) to the original; this walks the chain and returns the first ``ValueError``,
    ``TypeError`` or ``OSError`` (e.g. ``FileNotFoundError``), whose message names the file or item,
    or ``None`` when there is none.
    """
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (ValueError, TypeError, OSError)):
            return e
        e = e.__cause__ or e.__context__
    return None

"""Training augmentation settings and the per-item random transforms they give: flips, affine (rotate / zoom /
translate), gamma contrast, intensity scale and shift. :class:`medclass.transforms.BatchAugment` applies the same
recipe to whole batches (``augment_on: batch``)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from monai.transforms import (
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Transform,
)

logger = logging.getLogger(__name__)

__all__ = [
    "AUGMENT_KEYS", "AUGMENT_ON", "DEFAULT_AUGMENT", "augmentations", "check_augment_on", "flip_axes",
    "left_right_axis", "merge_augment",
]

#: Training augmentation defaults (a preset's ``augment`` and the ``augment`` argument override them).
DEFAULT_AUGMENT: dict[str, Any] = {
    "flip_prob": 0.5,  # RandFlip probability, per flip axis
    "flip_axes": None,  # spatial axes flipped (each on its own); None: the left-right axis (see build_transforms)
    "rotate_deg": 10.0,  # RandAffine rotation range +-degrees (about every axis in 3D)
    "zoom": 0.1,  # RandAffine scale range +-fraction
    "translate": 0.05,  # RandAffine translation range +-fraction of the image size
    "contrast_gamma": (0.8, 1.25),  # RandAdjustContrast gamma range, None to disable
    "intensity_scale": 0.0,  # RandScaleIntensity: x * (1 + U(-s, s)); 0 disables
    "intensity_shift": 0.0,  # RandShiftIntensity: x + U(-s, s) (units of the [0, 1] scaled image); 0 disables
    "prob": 0.5,  # probability of RandAffine, RandAdjustContrast and the intensity scale / shift
    "affine_prob": None,  # overrides "prob" for RandAffine
    "contrast_prob": None,  # overrides "prob" for RandAdjustContrast
    "intensity_prob": None,  # overrides "prob" for RandScaleIntensity / RandShiftIntensity
    "padding_mode": "zeros",  # RandAffine padding: "zeros", "border" or "reflection"
}
#: Every key an ``augment`` dict may hold.
AUGMENT_KEYS = frozenset(DEFAULT_AUGMENT) | {"enabled"}

#: Where the training augmentation runs: ``"sample"`` (MONAI dictionary transforms per item, in the data loader,
#: at the end of :func:`build_transforms`'s pipeline) or ``"batch"`` (:class:`medclass.transforms.BatchAugment`
#: on the collated training batch, on the training device; the item pipeline is then fully deterministic).
AUGMENT_ON = ("sample", "batch")

#: Where the training augmentation runs: ``"sample"`` (MONAI dictionary transforms per item, in the data loader,
#: at the end of :func:`medclass.transforms.build_transforms`'s pipeline) or ``"batch"``
#: (:class:`medclass.transforms.BatchAugment` on the collated training batch, on the training device; the item
#: pipeline is then fully deterministic).
AUGMENT_ON = ("sample", "batch")


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


def merge_augment(augment: Mapping[str, Any] | bool | None,
                  preset_augment: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """Merge :data:`DEFAULT_AUGMENT`, a preset's overrides and ``augment``; validate
    (:func:`medclass.transforms.resolve_augment` does it for a preset by name).

    Args:
        augment: ``None`` / ``True`` for the defaults, ``False`` or ``{"enabled": False}`` for none,
            or a dict overriding any of :data:`DEFAULT_AUGMENT`'s keys.
        preset_augment: the preset's overrides of :data:`DEFAULT_AUGMENT`.

    Returns:
        The full, validated settings (``affine_prob`` / ``contrast_prob`` / ``intensity_prob`` filled
        in, ``flip_axes`` a tuple or None), or ``None`` when augmentation is disabled. The flip axes'
        range is checked by :func:`build_transforms`, which knows ``spatial_dims``.
    """
    if augment is False:
        return None
    if augment is None or augment is True:
        augment = {}
    if not isinstance(augment, Mapping):
        raise TypeError(f"augment must be a dict, True, False or None, got {type(augment).__name__}")
    unknown = set(augment) - AUGMENT_KEYS
    if unknown:
        raise ValueError(f"unknown augment keys {sorted(unknown)}; allowed {sorted(AUGMENT_KEYS)}")
    if not augment.get("enabled", True):
        return None
    cfg = {**DEFAULT_AUGMENT, **dict(preset_augment or {}), **{k: v for k, v in augment.items() if k != "enabled"}}
    cfg["flip_prob"] = _prob(cfg, "flip_prob")
    cfg["prob"] = _prob(cfg, "prob")
    for k in ("affine_prob", "contrast_prob", "intensity_prob"):
        cfg[k] = cfg["prob"] if cfg[k] is None else _prob(cfg, k)
    cfg["rotate_deg"] = _nonneg(cfg, "rotate_deg", 180.0)
    cfg["zoom"] = _nonneg(cfg, "zoom", 1.0)
    cfg["translate"] = _nonneg(cfg, "translate", 1.0)
    cfg["intensity_scale"] = _nonneg(cfg, "intensity_scale", 1.0)
    cfg["intensity_shift"] = _nonneg(cfg, "intensity_shift", math.inf)
    axes = cfg["flip_axes"]
    if axes is not None:
        if isinstance(axes, (int, np.integer)) and not isinstance(axes, bool):
            axes = (axes,)
        if (
            not isinstance(axes, Sequence)
            or isinstance(axes, str)
            or not all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in axes)
        ):
            raise ValueError(f"augment['flip_axes'] must be None, an axis or a list of spatial axes, got {axes!r}")
        cfg["flip_axes"] = tuple(int(a) for a in axes)
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


def check_augment_on(value: Any) -> str:
    """Validate ``augment_on`` (``"sample"`` or ``"batch"``, case-insensitive); returns it in lower case."""
    v = str(value).lower() if isinstance(value, str) else value
    if v not in AUGMENT_ON:
        raise ValueError(f"augment_on must be one of {AUGMENT_ON}, got {value!r}")
    return v


def flip_axes(cfg: Mapping[str, Any], spatial_dims: int, options: Mapping[str, Any]) -> tuple[int, ...]:
    """The distinct spatial axes (``0 .. spatial_dims - 1``) a resolved augment config flips, in order.

    ``flip_axes=None`` means the left-right axis (see :func:`build_transforms`); ``ValueError`` for an axis out
    of range. Empty when ``flip_prob`` is 0.
    """
    if cfg["flip_prob"] <= 0:
        return ()
    axes = cfg["flip_axes"]
    if axes is None:
        axes = (left_right_axis(spatial_dims, options),)
    seen: list[int] = []
    for a in axes:
        if not -spatial_dims <= a < spatial_dims:
            raise ValueError(f"augment['flip_axes']: axis {a} out of range for spatial_dims={spatial_dims}")
        a = a % spatial_dims
        if a not in seen:
            seen.append(a)
    return tuple(seen)


def left_right_axis(spatial_dims: int, options: Mapping[str, Any]) -> int:
    """The spatial axis running left-right: from ``axcodes`` for reoriented volumes, else the last axis."""
    codes = options.get("axcodes")
    if spatial_dims == 3 and codes:
        return next(i for i, c in enumerate(codes) if c in ("L", "R"))
    return spatial_dims - 1


def augmentations(
    keys: list[str],
    cfg: Mapping[str, Any],
    spatial_dims: int,
    size: tuple[int, ...] | None,
    options: Mapping[str, Any],
) -> list[Transform]:
    """The per-item random transforms of a resolved augment config (:func:`merge_augment`), in pipeline order."""
    out: list[Transform] = [
        RandFlipd(keys, prob=cfg["flip_prob"], spatial_axis=a) for a in flip_axes(cfg, spatial_dims, options)
    ]
    if cfg["affine_prob"] > 0 and (cfg["rotate_deg"] > 0 or cfg["zoom"] > 0 or cfg["translate"] > 0):
        rot = math.radians(cfg["rotate_deg"])
        rotate_range = (rot,) if spatial_dims == 2 else (rot, rot, rot)
        translate_range = tuple(cfg["translate"] * s for s in size) if size is not None else None
        if size is None and cfg["translate"] > 0:
            logger.warning("image_size=None: translation augmentation disabled (no fixed size to scale it by)")
        out.append(
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
        out.append(RandAdjustContrastd(keys, prob=cfg["contrast_prob"], gamma=cfg["contrast_gamma"]))
    if cfg["intensity_prob"] > 0 and cfg["intensity_scale"] > 0:
        out.append(RandScaleIntensityd(keys, factors=cfg["intensity_scale"], prob=cfg["intensity_prob"]))
    if cfg["intensity_prob"] > 0 and cfg["intensity_shift"] > 0:
        out.append(RandShiftIntensityd(keys, offsets=cfg["intensity_shift"], prob=cfg["intensity_prob"]))
    return out

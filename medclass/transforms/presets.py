"""Preset transform pipelines (``cxr``, ``generic``, ``ct``, ``mr``) and their registry.

A pipeline is::

    ReadImaged -> LabelToTensord -> [spatial hook: orientation, spacing]
    -> intensity ([0, 1] percentile scaling, or the preset's hook: CT window, MR percentile / z-score)
    -> [pre_resize hook] -> size (AdaptiveResized, or CropOrPadd with size_mode="crop_pad")
    ---- deterministic above (MONAI CacheDataset caches it), random below ----
    [train only] RandFlipd (per flip axis) -> RandAffined (rotate / zoom / translate)
    -> RandAdjustContrastd (gamma) -> RandScaleIntensityd -> RandShiftIntensityd
    -> NormalizeIntensityd (fixed, (x - 0.5) / 0.25 unless the preset says otherwise) -> EnsureTyped

With ``augment_on="batch"`` the random steps are left out (the whole pipeline is deterministic and cached) and
:class:`medclass.transforms.BatchAugment` applies the same recipe to each training batch on its device.

Presets:

* ``cxr``: 2D radiographs (DICOM window + MONOCHROME1 inversion, 0.5/99.5 percentile scaling).
* ``generic``: already-normalised arrays (MedMNIST 2D ``(H, W)`` / 3D ``(D, H, W)``), min-max scaling; 3D files
  are oriented to ``axcodes`` (default ``"SPL"``: the ``(D, H, W)`` of arrays, see below).
* ``ct``: Hounsfield units (no DICOM window), orientation to ``axcodes`` (RAS), optional resampling
  to ``spacing`` mm, a CT ``window`` by name (:data:`~medclass.transforms.array.CT_WINDOWS`) or
  ``(level, width)`` mapped onto ``[0, 1]`` and clipped, then resize or crop/pad to ``image_size``.
* ``mr``: orientation, optional ``spacing``, per-volume ``mr_norm``: ``"percentile"`` (``percentiles``
  0.5/99.5 -> ``[0, 1]``) or ``"zscore"`` (body mean 0 / std 1; the final fixed normalisation is then
  the identity), then resize or crop/pad.

2D axis order: ``(H, W)`` display order for every source (the reader orients NIfTI / ITK slices and DICOMs with
``ImageOrientationPatient`` from their geometry, see :mod:`medclass.transforms.orientation`).

3D axis order: one orientation per pipeline, whatever the source. Arrays keep their ``(D, H, W)`` order (identity
affine); files (NIfTI, DICOM series / multi-frame, ITK) are read in voxel-index order ``(I, J, K)`` with their RAS
affine -- which depends on how each file stores the volume (a DICOM series and its ITK / 3D Slicer conversion
share ``(columns, rows, slices)``, dcm2niix or ``nibabel.as_closest_canonical`` files do not) -- and every preset
reorients them from that affine:

* ``ct`` / ``mr``: the output ``(1, X, Y, Z)`` runs towards the patient's Right, Anterior and Superior
  (``axcodes="RAS"``): ``image_size`` and ``spacing`` are given in that order, and the left-right axis (the default
  flip axis) is axis 0.
* ``generic``: ``axcodes="SPL"``: ``(1, D, H, W)`` with ``D`` from the feet to the head, ``H`` anterior to posterior
  and ``W`` the patient's right to left, i.e. an axial series' slices stacked in ascending position, each in 2D
  display order -- the layout of 3D arrays (which are not reoriented, having no geometry), so the default flip axis
  stays the last (``W``, left-right).

Output per item: ``image`` a ``float32`` :class:`monai.data.MetaTensor` of shape ``(1, *image_size)``
(about ``[-2, 2]`` after the fixed normalisation), its ``affine`` following every spatial step;
``label`` a ``float32`` tensor ``(C,)`` with NaN for unknown; every other field of the item (``id``,
``patient_id``, ...) passes through untouched.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose, EnsureTyped, NormalizeIntensityd, Orientationd, Spacingd, Transform
from monai.transforms.traits import RandomizableTrait

from medclass.transforms.array import (
    AdaptiveResized,
    CropOrPadd,
    LabelToTensord,
    OrientFromGeometryd,
    RobustScaleIntensityd,
    WindowIntensityd,
    ZScoreIntensityd,
    resolve_window,
)
from medclass.transforms.augment import (  # noqa: F401  (AUGMENT_ON, DEFAULT_AUGMENT: their names here before)
    AUGMENT_KEYS,
    AUGMENT_ON,
    DEFAULT_AUGMENT,
    augmentations,
    check_augment_on,
    flip_axes,
    merge_augment,
)
from medclass.transforms.checks import RequireContentd
from medclass.transforms.io import ReadImaged

logger = logging.getLogger(__name__)

__all__ = [
    "AUGMENT_ON",
    "DEFAULT_AUGMENT",
    "OPTION_NAMES",
    "Preset",
    "PRESETS",
    "WithOptions",
    "get_preset",
    "register_preset",
    "resolve_augment",
    "resolve_options",
    "build_transforms",
    "check_augment_on",
    "first_random_index",
    "flip_axes",
    "normalization",
    "transform_error",
]


#: Every preset option :func:`build_transforms` knows (a preset accepts those in its ``options``,
#: plus ``size_mode`` always and ``percentiles`` when it uses the built-in percentile scaling).
OPTION_NAMES = ("size_mode", "window", "spacing", "axcodes", "mr_norm", "percentiles")
_SIZE_MODES = ("resize", "crop_pad")
_MR_NORMS = ("percentile", "zscore")
_AXCODE_PAIRS = (("L", "R"), ("P", "A"), ("I", "S"))


@dataclass(frozen=True)
class WithOptions:
    """A preset's ``intensity`` / ``pre_resize`` hook that takes the resolved options:
    ``fn(image_key, spatial_dims, options)`` (a plain callable hook is called as ``fn(image_key, spatial_dims)``)."""

    fn: Callable[[str, int, Mapping[str, Any]], Sequence[Transform]]

    def __call__(self, key: str, spatial_dims: int, options: Mapping[str, Any]) -> list[Transform]:
        return list(self.fn(key, spatial_dims, options))


#: An ``intensity`` / ``pre_resize`` hook: ``f(image_key, spatial_dims)``, or :class:`WithOptions`.
Hook = Callable[[str, int], Sequence[Transform]] | WithOptions


def _hook_transforms(hook: Hook, key: str, spatial_dims: int, options: Mapping[str, Any]) -> list[Transform]:
    if isinstance(hook, WithOptions):
        return hook(key, spatial_dims, options)
    return list(hook(key, spatial_dims))


@dataclass(frozen=True)
class Preset:
    """How :func:`build_transforms` builds one kind of pipeline.

    Hooks return lists of deterministic transforms; ``spatial`` is called as
    ``f(image_key, spatial_dims, options)``, ``intensity`` and ``pre_resize`` as ``f(image_key, spatial_dims)``, or,
    wrapped in :class:`WithOptions`, as ``f(image_key, spatial_dims, options)``, with ``options`` the resolved option
    dict (see :func:`resolve_options`).

    Attributes:
        name: registry key.
        description: one line for listings.
        voi: apply DICOM VOI LUT / window center-width when reading.
        percentiles: ``(lower, upper)`` for per-image robust scaling to ``[0, 1]``; ignored when
            ``intensity`` is given (the ``percentiles`` option overrides it).
        intensity: optional hook replacing the percentile scaling (e.g. a fixed CT HU window); must
            map intensities to about ``[0, 1]`` (or match ``normalize``).
        pre_resize: optional hook of deterministic transforms run after the intensity step, before the
            resize / crop-pad.
        augment: overrides of :data:`DEFAULT_AUGMENT` for this preset.
        normalize: ``(subtrahend, divisor)`` of the final fixed normalisation, or
            ``f(options) -> (subtrahend, divisor)``.
        spatial_dims: the spatial dims this preset supports.
        spatial: optional hook of deterministic geometry transforms run right after reading (before
            the intensity step), e.g. orientation and resampling.
        options: the options this preset accepts beyond ``size_mode`` / ``percentiles``, with their
            defaults (``None`` passed for an option means "use this default").
    """

    name: str
    description: str = ""
    voi: bool = True
    percentiles: tuple[float, float] = (0.5, 99.5)
    intensity: Hook | None = None
    pre_resize: Hook | None = None
    augment: Mapping[str, Any] = field(default_factory=dict)
    normalize: tuple[float, float] | Callable[[Mapping[str, Any]], tuple[float, float]] = (0.5, 0.25)
    spatial_dims: tuple[int, ...] = (2, 3)
    spatial: Callable[[str, int, Mapping[str, Any]], list[Transform]] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


#: Registered presets by name; add more with :func:`register_preset`.
PRESETS: dict[str, Preset] = {}


def register_preset(preset: Preset, overwrite: bool = False) -> Preset:
    """Add ``preset`` to :data:`PRESETS` (``ValueError`` if the name exists and not ``overwrite``)."""
    if not isinstance(preset, Preset):
        raise TypeError(f"expected a Preset, got {type(preset).__name__}")
    if preset.name in PRESETS and not overwrite:
        raise ValueError(f"preset {preset.name!r} already registered; pass overwrite=True to replace it")
    unknown = set(preset.augment) - AUGMENT_KEYS
    if unknown:
        raise ValueError(
            f"preset {preset.name!r}: unknown augment keys {sorted(unknown)}; allowed {sorted(AUGMENT_KEYS)}"
        )
    PRESETS[preset.name] = preset
    return preset


# --------------------------------------------------------------------------------------------------
# built-in presets


def _orientation_and_spacing(key: str, spatial_dims: int, options: Mapping[str, Any]) -> list[Transform]:
    """Orientation to ``axcodes`` (3D only: 2D images stay in display order), then resampling to ``spacing``."""
    out: list[Transform] = []
    if spatial_dims == 3 and options.get("axcodes"):
        out.append(Orientationd(keys=[key], axcodes=options["axcodes"], labels=_AXCODE_PAIRS))
    if options.get("spacing") is not None:
        out.append(
            Spacingd(
                keys=[key], pixdim=options["spacing"], mode="bilinear", padding_mode="border", dtype=np.float32
            )
        )
    return out


def _orient_files(key: str, spatial_dims: int, options: Mapping[str, Any]) -> list[Transform]:
    """``generic`` in 3D: files (NIfTI, ITK, DICOM) to ``axcodes``; arrays keep the order given."""
    if spatial_dims == 3 and options.get("axcodes"):
        return [OrientFromGeometryd(keys=[key], axcodes=options["axcodes"], labels=_AXCODE_PAIRS)]
    return []


def _ct_window(key: str, spatial_dims: int, options: Mapping[str, Any]) -> list[Transform]:
    return [WindowIntensityd([key], window=options["window"])]


def _mr_intensity(key: str, spatial_dims: int, options: Mapping[str, Any]) -> list[Transform]:
    if options["mr_norm"] == "zscore":
        return [ZScoreIntensityd([key])]
    lo, hi = options["percentiles"]
    return [RobustScaleIntensityd([key], lower=lo, upper=hi)]


def _mr_normalize(options: Mapping[str, Any]) -> tuple[float, float]:
    return (0.0, 1.0) if options["mr_norm"] == "zscore" else (0.5, 0.25)


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
        description="any 2D/3D image: raw modality values (no DICOM window), 3D files as (D, H, W) like arrays "
        "(axcodes SPL), min-max scaling, flip/affine, no gamma",
        voi=False,
        percentiles=(0.0, 100.0),
        spatial=_orient_files,
        options={"axcodes": "SPL"},
        augment={"contrast_gamma": None},
    )
)
register_preset(
    Preset(
        name="ct",
        description="CT in HU: orientation (RAS), optional spacing, named or (level, width) window to [0, 1], "
        "flip/affine/intensity scale+shift",
        voi=False,
        spatial=_orientation_and_spacing,
        intensity=WithOptions(_ct_window),
        options={"axcodes": "RAS", "spacing": None, "window": "soft_tissue"},
        augment={"contrast_gamma": None, "intensity_scale": 0.1, "intensity_shift": 0.1},
    )
)
register_preset(
    Preset(
        name="mr",
        description="MR: orientation (RAS), optional spacing, per-volume percentile (0.5/99.5) or z-score "
        "normalisation, flip/affine/gamma/intensity scale+shift",
        voi=False,
        spatial=_orientation_and_spacing,
        intensity=WithOptions(_mr_intensity),
        normalize=_mr_normalize,
        options={"axcodes": "RAS", "spacing": None, "mr_norm": "percentile", "percentiles": (0.5, 99.5)},
        augment={"intensity_scale": 0.1, "intensity_shift": 0.1, "padding_mode": "border"},
    )
)


# --------------------------------------------------------------------------------------------------
# options


def _check_axcodes(value: Any) -> str:
    if not isinstance(value, str) or len(value) != 3:
        raise ValueError(f"axcodes must be 3 letters such as 'RAS' or 'LPS', got {value!r}")
    codes = value.upper()
    pairs = sorted(next((i for i, pair in enumerate(_AXCODE_PAIRS) if c in pair), -1) for c in codes)
    if pairs != [0, 1, 2]:
        raise ValueError(f"axcodes must name each of L/R, P/A and I/S once (e.g. 'RAS', 'LPS'), got {value!r}")
    return codes


def _check_spacing(value: Any, spatial_dims: int) -> tuple[float, ...]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value,) * spatial_dims
    try:
        vals = tuple(value)
    except TypeError:
        raise ValueError(f"spacing must be None, a number or {spatial_dims} numbers (mm), got {value!r}") from None
    if len(vals) != spatial_dims or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in vals
    ):
        raise ValueError(f"spacing must be None, a number or {spatial_dims} positive numbers (mm), got {value!r}")
    return tuple(float(v) for v in vals)


def _check_percentiles(value: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"percentiles must be (lower, upper), got {value!r}") from None
    if not 0.0 <= lo < hi <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {value!r}")
    return lo, hi


def resolve_options(preset: Preset | str, spatial_dims: int = 3, **options: Any) -> dict[str, Any]:
    """The full, validated option dict a preset's pipeline is built with.

    Args:
        preset: a :class:`Preset` or registered name.
        spatial_dims: 2 or 3 (``spacing`` needs that many values).
        **options: option values; ``None`` means the preset's default. Known options:
            ``size_mode`` (``"resize"`` | ``"crop_pad"``, every preset), ``window`` (``ct``),
            ``spacing`` (``ct``, ``mr``), ``axcodes`` (``ct``, ``mr``, ``generic``), ``mr_norm`` (``mr``),
            ``percentiles`` (``mr`` and presets using the built-in percentile scaling: ``cxr``, ``generic``),
            plus any declared in a custom preset's ``options``.

    Returns:
        Every option the preset accepts, with defaults filled in and values normalised (``window``
        as ``(level, width)``, ``spacing`` as a tuple of floats or None, ``axcodes`` upper case).

    Raises:
        ValueError: unknown option, an option the preset does not take (given a non-None value), or
            an invalid value.
    """
    p = get_preset(preset)
    defaults: dict[str, Any] = {"size_mode": "resize"}
    if p.intensity is None:
        defaults["percentiles"] = tuple(p.percentiles)
    defaults.update(dict(p.options))
    out = dict(defaults)
    for k, v in options.items():
        if k not in defaults:
            if k not in OPTION_NAMES:
                raise ValueError(
                    f"unknown option {k!r} for preset {p.name!r}; known options {list(OPTION_NAMES)}, this preset "
                    f"takes {sorted(defaults)}"
                )
            if v is not None:
                raise ValueError(f"option {k!r} does not apply to preset {p.name!r} (it takes {sorted(defaults)})")
            continue
        if v is not None:
            out[k] = v
    if out["size_mode"] not in _SIZE_MODES:
        raise ValueError(f"size_mode must be one of {_SIZE_MODES}, got {out['size_mode']!r}")
    if "window" in out:
        out["window"] = resolve_window(out["window"])
    if out.get("spacing") is not None:
        out["spacing"] = _check_spacing(out["spacing"], spatial_dims)
    if out.get("axcodes") is not None:
        out["axcodes"] = _check_axcodes(out["axcodes"])
    if "mr_norm" in out and out["mr_norm"] not in _MR_NORMS:
        raise ValueError(f"mr_norm must be one of {_MR_NORMS}, got {out['mr_norm']!r}")
    if out.get("percentiles") is not None:
        out["percentiles"] = _check_percentiles(out["percentiles"])
    return out




def resolve_augment(augment: Mapping[str, Any] | bool | None, preset: Preset | str = "cxr") -> dict[str, Any] | None:
    """Merge :data:`DEFAULT_AUGMENT`, the preset's overrides and ``augment``; validate
    (:func:`medclass.transforms.augment.merge_augment` with the preset's ``augment``).

    Returns:
        The full, validated settings, or ``None`` when augmentation is disabled.
    """
    return merge_augment(augment, get_preset(preset).augment)




def get_preset(preset: Preset | str) -> Preset:
    """``preset`` itself, or the registered preset of that name (``ValueError`` naming the registered ones)."""
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
    *,
    size_mode: str | None = None,
    window: str | Sequence[float] | None = None,
    spacing: Sequence[float] | float | None = None,
    axcodes: str | None = None,
    mr_norm: str | None = None,
    percentiles: Sequence[float] | None = None,
    options: Mapping[str, Any] | None = None,
    augment_on: str = "sample",
) -> Compose:
    """Build the item transform for a datalist of ``{"image": path | array, "label": (C,), "id": str, ...}``.

    Args:
        preset: a registered name (see :data:`PRESETS`: ``"cxr"``, ``"generic"``, ``"ct"``, ``"mr"``)
            or a :class:`Preset`.
        spatial_dims: 2 (radiographs, slices) or 3 (volumes).
        image_size: output spatial shape ``(H, W)`` / ``(D, H, W)`` (for ``ct`` / ``mr`` in 3D: ``(X, Y,
            Z)`` in ``axcodes`` order); an int is repeated; ``None`` keeps the size after the spatial steps
            (items then only collate when they share a size).
        train: add random augmentation (see :data:`DEFAULT_AUGMENT`), unless ``augment_on="batch"``.
        image_key: the item key holding the image path or array.
        label_key: the item key holding the label; items without it pass (inference).
        augment: ``None``/``True`` (defaults), ``False`` / ``{"enabled": False}`` (none) or a dict of
            overrides; only used when ``train``. ``flip_axes=None`` flips the left-right axis: the
            ``R``/``L`` axis of ``axcodes`` (axis 0 for ``RAS``) for ``ct`` / ``mr`` in 3D, else the last.
        id_key: the item key naming array images in metadata and errors.
        size_mode: ``"resize"`` (default: the whole field of view, (bi/tri)linear or area resampling to
            ``image_size``) or ``"crop_pad"`` (centre crop / pad, voxel size kept; pad value the image
            minimum, i.e. the background after windowing / normalisation). Every preset.
        window: ``ct``: a named window (``"soft_tissue"`` (default, 40/400), ``"abdomen"`` (50/400),
            ``"mediastinum"`` (50/350), ``"liver"`` (30/150), ``"brain"`` (40/80), ``"lung"``
            (-600/1500), ``"bone"`` (400/1800)) or ``(level, width)`` in HU.
        spacing: ``ct`` / ``mr``: resample to this voxel size in mm (a number or one per axis, in output
            axis order, e.g. ``(1.5, 1.5, 2.0)``); ``None`` (default) keeps the native voxel size.
        axcodes: 3D: orientation of the output axes of volumes read from files (``ct`` / ``mr``: default
            ``"RAS"``; ``generic``: default ``"SPL"``, i.e. ``(D, H, W)``, and arrays are left as given).
        mr_norm: ``mr``: ``"percentile"`` (default; ``percentiles`` -> ``[0, 1]``, clipped) or
            ``"zscore"`` (foreground mean 0 / std 1; the final fixed normalisation is then skipped).
        percentiles: ``(lower, upper)`` for percentile scaling (``mr``: default ``(0.5, 99.5)``; ``cxr``
            ``(0.5, 99.5)``; ``generic`` ``(0, 100)`` i.e. min-max).
        options: the same options as a dict (e.g. from a config), and those of custom presets; the
            keyword arguments above take precedence. ``None`` values mean "the preset's default"; a
            non-None option the preset does not take is a ``ValueError``.
        augment_on: ``"sample"`` (default): the random augmentation is part of this per-item pipeline;
            ``"batch"``: it is left out (``augment`` is still validated) and applied to whole training batches
            by :class:`medclass.transforms.BatchAugment` (built with :func:`medclass.transforms.build_batch_augment`
            from the same arguments), so the pipeline is deterministic and cached to its end.

    Returns:
        A :class:`monai.transforms.Compose` whose leading deterministic transforms (up to
        :func:`first_random_index`) are what :class:`monai.data.CacheDataset` caches. Output:
        ``image`` ``float32`` MetaTensor ``(1, *image_size)``, ``label`` ``float32`` tensor ``(C,)``.
    """
    if isinstance(spatial_dims, bool) or spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    p = get_preset(preset)
    if spatial_dims not in p.spatial_dims:
        raise ValueError(f"preset {p.name!r} supports spatial_dims {p.spatial_dims}, got {spatial_dims}")
    size = _image_size(image_size, spatial_dims)
    given = dict(options or {})
    for k, v in (
        ("size_mode", size_mode),
        ("window", window),
        ("spacing", spacing),
        ("axcodes", axcodes),
        ("mr_norm", mr_norm),
        ("percentiles", percentiles),
    ):
        if v is not None:
            given[k] = v
    opts = resolve_options(p, spatial_dims, **given)
    keys = [image_key]

    xforms: list[Transform] = [
        ReadImaged(keys=keys, spatial_dims=spatial_dims, voi=p.voi, id_key=id_key),
        RequireContentd(keys=keys),
        LabelToTensord(keys=[label_key], allow_missing_keys=True),
    ]
    if p.spatial is not None:
        xforms += list(p.spatial(image_key, spatial_dims, opts))
    if p.intensity is not None:
        xforms += _hook_transforms(p.intensity, image_key, spatial_dims, opts)
    else:
        lo, hi = opts["percentiles"]
        xforms.append(RobustScaleIntensityd(keys, lower=lo, upper=hi))
    if p.pre_resize is not None:
        xforms += _hook_transforms(p.pre_resize, image_key, spatial_dims, opts)
    if size is not None:
        if opts["size_mode"] == "crop_pad":
            xforms.append(CropOrPadd(keys, spatial_size=size))
        else:
            xforms.append(AdaptiveResized(keys, spatial_size=size))

    augment_on = check_augment_on(augment_on)
    cfg = resolve_augment(augment, p) if train else None
    if cfg is not None:
        if augment_on == "sample":
            xforms += augmentations(keys, cfg, spatial_dims, size, opts)
        else:
            flip_axes(cfg, spatial_dims, opts)  # same errors as the per-item pipeline, at build time
    sub, div = normalization(p, opts)
    if (sub, div) != (0.0, 1.0):
        xforms.append(NormalizeIntensityd(keys, subtrahend=sub, divisor=div))
    xforms.append(EnsureTyped(keys, data_type="tensor", dtype=torch.float32))
    logger.debug(
        "built %s pipeline (spatial_dims=%d, image_size=%s, train=%s, options=%s): %s",
        p.name, spatial_dims, size, train, opts, [type(t).__name__ for t in xforms],
    )
    return Compose(xforms)




def normalization(preset: Preset | str, options: Mapping[str, Any]) -> tuple[float, float]:
    """``(subtrahend, divisor)`` of the preset's final fixed normalisation ``(x - subtrahend) / divisor``."""
    p = get_preset(preset)
    sub, div = p.normalize(options) if callable(p.normalize) else p.normalize
    return float(sub), float(div)




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

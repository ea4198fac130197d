"""Deterministic array transforms used by the presets, with their dictionary wrappers.

All image transforms take and return channel-first data ``(C, H, W[, D])`` (numpy arrays stay
numpy, tensors / :class:`monai.data.MetaTensor` stay tensors with their metadata).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import MapTransform, Orientation, Resize, Transform
from monai.utils import convert_to_dst_type, convert_to_tensor

logger = logging.getLogger(__name__)

__all__ = [
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
]

#: Named CT windows as ``(level, width)`` in Hounsfield units (the usual radiology display settings).
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "soft_tissue": (40.0, 400.0),
    "abdomen": (50.0, 400.0),
    "mediastinum": (50.0, 350.0),
    "liver": (30.0, 150.0),
    "brain": (40.0, 80.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
}


def resolve_window(window: str | Sequence[float]) -> tuple[float, float]:
    """A CT window by name (see :data:`CT_WINDOWS`) or as ``(level, width)`` -> ``(level, width)`` floats.

    Raises:
        ValueError: unknown name, not two finite numbers, or width <= 0.
    """
    if isinstance(window, str):
        key = window.strip().lower().replace("-", "_").replace(" ", "_")
        if key not in CT_WINDOWS:
            raise ValueError(f"unknown CT window {window!r}; named windows: {sorted(CT_WINDOWS)}, or (level, width)")
        return CT_WINDOWS[key]
    try:
        vals = [v for v in window]
    except TypeError:
        raise ValueError(f"window must be a name {sorted(CT_WINDOWS)} or (level, width), got {window!r}") from None
    if (
        len(vals) != 2
        or not all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in vals)
        or not all(np.isfinite(float(v)) for v in vals)
    ):
        raise ValueError(f"window must be a name {sorted(CT_WINDOWS)} or (level, width) numbers, got {window!r}")
    level, width = float(vals[0]), float(vals[1])
    if width <= 0:
        raise ValueError(f"window width must be > 0, got (level, width) = ({level}, {width})")
    return level, width


class _KeyWise(MapTransform):
    """Dictionary wrapper base: applies the array transform held in ``self.<_array_attr>`` to every key."""

    _array_attr: str

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        transform = getattr(self, self._array_attr)
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = transform(d[key])
        return d

class RobustScaleIntensity(Transform):
    """Scale intensities per image to ``[0, 1]`` between two percentiles, clipping outside values.

    ``out = clip((x - p_lower) / (p_upper - p_lower), 0, 1)`` with the percentiles taken over the
    whole image (all channels). A constant image (``p_upper == p_lower``) becomes all zeros.

    Args:
        lower: lower percentile in ``[0, 100)``; 0 is the minimum.
        upper: upper percentile in ``(lower, 100]``; 100 is the maximum.
    """

    def __init__(self, lower: float = 0.5, upper: float = 99.5) -> None:
        lower, upper = float(lower), float(upper)
        if not (0.0 <= lower < upper <= 100.0):
            raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got lower={lower}, upper={upper}")
        self.lower = lower
        self.upper = upper

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """``img``: ``(C, H, W[, D])`` any real values -> same shape, ``float32`` in ``[0, 1]``."""
        t = convert_to_tensor(img, dtype=torch.float32, track_meta=get_track_meta())
        values = t.detach().cpu().numpy().ravel()
        if self.lower == 0.0 and self.upper == 100.0:
            lo, hi = float(values.min()), float(values.max())
        else:
            lo, hi = (float(v) for v in np.percentile(values, [self.lower, self.upper]))
        if not hi > lo:
            logger.debug("constant image (percentiles %s..%s = %s): scaled to zeros", self.lower, self.upper, lo)
            out = t * 0.0
        else:
            out = ((t - lo) / (hi - lo)).clamp(0.0, 1.0)
        dtype = torch.float32 if isinstance(img, torch.Tensor) else np.float32
        out, *_ = convert_to_dst_type(out, dst=img, dtype=dtype)
        return out


class RobustScaleIntensityd(_KeyWise):
    """Dictionary wrapper of :class:`RobustScaleIntensity`."""
    _array_attr = "scaler"

    def __init__(
        self, keys: KeysCollection, lower: float = 0.5, upper: float = 99.5, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.scaler = RobustScaleIntensity(lower, upper)


class WindowIntensity(Transform):
    """Map a CT window onto ``[0, 1]``: ``clip((x - (level - width / 2)) / width, 0, 1)``.

    Values at or below ``level - width / 2`` become 0, at or above ``level + width / 2`` become 1
    (e.g. with ``"soft_tissue"`` (40, 400): -160 HU and air -> 0, 240 HU and bone -> 1).

    Args:
        window: a name of :data:`CT_WINDOWS` or ``(level, width)`` in the image's units (HU).
    """

    def __init__(self, window: str | Sequence[float] = "soft_tissue") -> None:
        self.level, self.width = resolve_window(window)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """``img``: ``(C, *spatial)`` in HU -> same shape, ``float32`` in ``[0, 1]``."""
        t = convert_to_tensor(img, dtype=torch.float32, track_meta=get_track_meta())
        low = self.level - self.width / 2.0
        out = ((t - low) / self.width).clamp(0.0, 1.0)
        dtype = torch.float32 if isinstance(img, torch.Tensor) else np.float32
        out, *_ = convert_to_dst_type(out, dst=img, dtype=dtype)
        return out


class WindowIntensityd(_KeyWise):
    """Dictionary wrapper of :class:`WindowIntensity`."""
    _array_attr = "windower"

    def __init__(
        self, keys: KeysCollection, window: str | Sequence[float] = "soft_tissue", allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.windower = WindowIntensity(window)


class ZScoreIntensity(Transform):
    """Per-image z-score over the foreground: ``(x - mean_fg) / std_fg``, applied to every voxel.

    The foreground (the body) is the voxels above ``p_lo + foreground * (p_hi - p_lo)``, with
    ``p_lo`` / ``p_hi`` the 0.5th / 99.5th percentiles: the dark background (air, zero padding, noise)
    is left out of the statistics, so the body has mean 0 and standard deviation 1 and the background
    ends negative. The mapping is one linear function for the whole image (no clipping). When fewer
    than 1% of the voxels pass, all voxels are used; a constant image becomes zeros.

    Args:
        foreground: background threshold as a fraction of the robust intensity range, in ``[0, 1)``;
            0 uses every voxel above the 0.5th percentile.
    """

    def __init__(self, foreground: float = 0.05) -> None:
        foreground = float(foreground)
        if not 0.0 <= foreground < 1.0:
            raise ValueError(f"foreground must be a fraction in [0, 1), got {foreground}")
        self.foreground = foreground

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """``img``: ``(C, *spatial)`` -> same shape, ``float32``."""
        t = convert_to_tensor(img, dtype=torch.float32, track_meta=get_track_meta())
        values = t.detach().cpu().numpy().ravel()
        lo, hi = (float(v) for v in np.percentile(values, [0.5, 99.5]))
        fg = values[values > lo + self.foreground * (hi - lo)] if hi > lo else values[:0]
        if fg.size < 0.01 * values.size:
            fg = values
        mean, std = float(fg.mean(dtype=np.float64)), float(fg.std(dtype=np.float64))
        if not std > 0:
            logger.debug("constant image: z-score gives zeros")
            out = t * 0.0
        else:
            out = (t - mean) / std
        dtype = torch.float32 if isinstance(img, torch.Tensor) else np.float32
        out, *_ = convert_to_dst_type(out, dst=img, dtype=dtype)
        return out


class ZScoreIntensityd(_KeyWise):
    """Dictionary wrapper of :class:`ZScoreIntensity`."""
    _array_attr = "normalizer"

    def __init__(self, keys: KeysCollection, foreground: float = 0.05, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.normalizer = ZScoreIntensity(foreground)


class AdaptiveResize(Transform):
    """Resize the spatial dims to ``spatial_size``, choosing the interpolation per image.

    Pure downsampling (every axis shrinks or stays) uses area averaging (anti-aliased, cheap);
    otherwise (bi/tri)linear interpolation with Gaussian anti-aliasing on the axes that shrink.
    Images already at ``spatial_size`` are returned unchanged. Wraps :class:`monai.transforms.Resize`
    so a :class:`~monai.data.MetaTensor`'s affine and applied operations are updated.

    Args:
        spatial_size: output spatial shape ``(H, W)`` or ``(D, H, W)``.
    """

    def __init__(self, spatial_size: Sequence[int]) -> None:
        size = tuple(int(s) for s in spatial_size)
        if len(size) not in (2, 3) or any(s < 1 for s in size):
            raise ValueError(f"spatial_size must be 2 or 3 positive ints, got {spatial_size!r}")
        self.spatial_size = size
        self.resizer = Resize(spatial_size=size, mode="area", dtype=torch.float32)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """``img``: ``(C, *in_size)`` -> ``(C, *spatial_size)`` ``float32``."""
        in_size = tuple(int(s) for s in img.shape[1:])
        if len(in_size) != len(self.spatial_size):
            raise ValueError(
                f"image of shape {tuple(img.shape)} has {len(in_size)} spatial dims, but the resize target "
                f"{self.spatial_size} has {len(self.spatial_size)}"
            )
        if in_size == self.spatial_size:
            return img
        if all(o <= i for i, o in zip(in_size, self.spatial_size)):
            return self.resizer(img, mode="area")
        mode = "bilinear" if len(in_size) == 2 else "trilinear"
        return self.resizer(img, mode=mode, align_corners=False, anti_aliasing=True)


class AdaptiveResized(_KeyWise):
    """Dictionary wrapper of :class:`AdaptiveResize`."""
    _array_attr = "resizer"

    def __init__(self, keys: KeysCollection, spatial_size: Sequence[int], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.resizer = AdaptiveResize(spatial_size)


class CropOrPad(Transform):
    """Centre-crop and / or pad every spatial axis to ``spatial_size`` (no resampling: voxel size kept).

    Padding is symmetric and uses the image's minimum (its background after window / normalisation:
    air for CT, 0 for percentile-scaled MR, the most negative value after a z-score). Wraps
    :class:`monai.transforms.ResizeWithPadOrCrop`, so a MetaTensor's affine follows (the origin moves).

    Args:
        spatial_size: output spatial shape ``(H, W)`` or ``(D, H, W)``.
    """

    def __init__(self, spatial_size: Sequence[int]) -> None:
        from monai.transforms import ResizeWithPadOrCrop

        size = tuple(int(s) for s in spatial_size)
        if len(size) not in (2, 3) or any(s < 1 for s in size):
            raise ValueError(f"spatial_size must be 2 or 3 positive ints, got {spatial_size!r}")
        self.spatial_size = size
        self.cropper = ResizeWithPadOrCrop(spatial_size=size, method="symmetric", mode="constant")

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """``img``: ``(C, *in_size)`` -> ``(C, *spatial_size)``."""
        in_size = tuple(int(s) for s in img.shape[1:])
        if len(in_size) != len(self.spatial_size):
            raise ValueError(
                f"image of shape {tuple(img.shape)} has {len(in_size)} spatial dims, but the crop/pad target "
                f"{self.spatial_size} has {len(self.spatial_size)}"
            )
        if in_size == self.spatial_size:
            return img
        value = float(img.min()) if any(o > i for i, o in zip(in_size, self.spatial_size)) else 0.0
        return self.cropper(img, value=value)


class CropOrPadd(_KeyWise):
    """Dictionary wrapper of :class:`CropOrPad`."""
    _array_attr = "cropper"

    def __init__(self, keys: KeysCollection, spatial_size: Sequence[int], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.cropper = CropOrPad(spatial_size)


class OrientFromGeometry(Transform):
    """MONAI :class:`~monai.transforms.Orientation` to ``axcodes`` for images that carry a patient geometry.

    Images read from NIfTI, ITK or DICOM files (``meta["source_format"]`` ``"nifti"``, ``"itk"``, ``"dicom"``)
    are reoriented from their affine, so that one volume stored in different voxel orders (a DICOM series, a
    NIfTI written by ITK / dcm2niix / nibabel) gives one array. Arrays and ``.npy`` files have no geometry
    (their identity affine is a placeholder) and pass unchanged, in the order given.

    Args:
        axcodes: three letters, e.g. ``"RAS"`` or ``"SPL"`` (see :class:`monai.transforms.Orientation`).
        labels: the axis-code pairs (default ``(("L", "R"), ("P", "A"), ("I", "S"))``).
    """

    GEOMETRIC_SOURCES = ("nifti", "itk", "dicom")

    def __init__(self, axcodes: str, labels: Sequence[tuple[str, str]] = (("L", "R"), ("P", "A"), ("I", "S"))) -> None:
        self.orientation = Orientation(axcodes=axcodes, labels=tuple(tuple(p) for p in labels))

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Reorient ``img`` (a :class:`~monai.data.MetaTensor` from the reader) when it has a geometry."""
        meta = getattr(img, "meta", None) or {}
        if meta.get("source_format") not in self.GEOMETRIC_SOURCES:
            return img
        return self.orientation(img)


class OrientFromGeometryd(_KeyWise):
    """Dictionary wrapper of :class:`OrientFromGeometry`."""

    _array_attr = "orienter"

    def __init__(self, keys: KeysCollection, axcodes: str,
                 labels: Sequence[tuple[str, str]] = (("L", "R"), ("P", "A"), ("I", "S")),
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.orienter = OrientFromGeometry(axcodes, labels)


class LabelToTensor(Transform):
    """Label (scalar, list, array or tensor) -> ``float32`` tensor of shape ``(C,)``; NaN (unknown) kept.

    Raises:
        TypeError: non-numeric label.
        ValueError: label with more than one dimension.
    """

    def __call__(self, label: Any) -> torch.Tensor:
        if isinstance(label, torch.Tensor):
            label = label.detach().cpu().numpy()
        try:
            arr = np.asarray(label, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise TypeError(f"label must be numeric (float, with NaN for unknown), got {label!r}") from e
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.ndim != 1:
            raise ValueError(f"label must be a scalar or a 1D vector (C,), got shape {arr.shape}")
        return torch.from_numpy(np.array(arr, dtype=np.float32))


class LabelToTensord(MapTransform):
    """Dictionary wrapper of :class:`LabelToTensor` (missing labels allowed by default, for inference)."""

    def __init__(self, keys: KeysCollection = ("label",), allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = LabelToTensor()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            try:
                d[key] = self.converter(d[key])
            except (TypeError, ValueError) as e:
                item = d.get("id", "<no id>")
                raise type(e)(f"item {item}: {key!r}: {e}") from e
        return d

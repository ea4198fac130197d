"""Image reading: DICOM, PIL formats (PNG, JPEG, TIFF, ...), NIfTI, ITK formats and in-memory arrays.

Every reader returns a single-channel, channel-first ``float32`` array and a metadata dict with one
fixed set of keys (see :data:`META_KEYS`), so that items from different sources collate into one
batch.

2D (``spatial_dims=2``): ``(1, H, W)`` in DICOM display order, rows top to bottom and columns left to
right, decided by the image's own geometry (:mod:`medclass.transforms.orientation` has the rule): DICOM
without ``ImageOrientationPatient`` (most radiographs), PNG / JPEG / TIFF and arrays keep their stored
pixel order (*not* MONAI ``PILReader``'s transposed order); NIfTI / NRRD / MHA slices follow their affine,
so a file that ITK, SimpleITK or 3D Slicer wrote from a DICOM (stored ``(columns, rows, 1)``) reads exactly
as the DICOM does; a DICOM with ``ImageOrientationPatient`` follows the same rule (a mirrored or transposed
one is put upright). ``meta["world_affine"]`` places the returned pixels in the patient (RAS, mm);
``meta["source_affine"]`` the pixels as stored.

3D (``spatial_dims=3``):

* Arrays (e.g. MedMNIST 3D) come out as ``(1, D, H, W)`` in the order given, identity affine.
* NIfTI and ITK files keep their voxel-index order ``(1, I, J, K)`` and their voxel-to-world affine
  (nibabel's, as MONAI keeps it), in RAS world coordinates.
* DICOM volumes -- a series given as a folder of slices, or one multi-frame file -- come out as
  ``(1, columns, rows, slices)`` (the voxel order of MONAI's ITK / pydicom readers and of NIfTI files
  converted from DICOM), slices in ascending position along the slice normal (row direction x column
  direction), with the RAS affine built from ``ImageOrientationPatient`` / ``ImagePositionPatient`` /
  ``PixelSpacing`` (identical to ITK's). A series folder is validated: one ``SeriesInstanceUID``,
  one slice size / orientation / pixel spacing, no duplicated positions, no missing slices (a gap
  over :data:`SLICE_GAP_FACTOR` median spacings), even spacing (:data:`SLICE_SPACING_RTOL` /
  :data:`SLICE_SPACING_ATOL`); files that are not DICOM images (``.txt``, ``.DS_Store``, ``DICOMDIR``)
  and subfolders are skipped with a warning. Each slice gets its own modality LUT (rescale).
* A 2D image (a PNG, a single-frame DICOM, an ``(H, W)`` array, a volume one slice thick), a 4D
  volume, or NaN / Inf voxels raise ``ValueError`` naming the file and the problem.

Intensity conventions:

* DICOM: stored values -> modality LUT (rescale slope / intercept, e.g. CT Hounsfield units) ->
  optional VOI LUT or window (``voi=True``; output then lies in ``[0, 1]``) -> ``MONOCHROME1``
  (or Presentation LUT Shape ``INVERSE``) inverted so that high values are bright (bone / tissue)
  as in ``MONOCHROME2``. Without a window, values keep modality units (e.g. HU).
* PIL: 8-bit / 16-bit / integer / float values are kept as stored (no rescaling); colour images are
  converted to luminance (ITU-R 601: ``0.299 R + 0.587 G + 0.114 B``), alpha dropped.
* Arrays: values kept; ``(H, W, 3|4)`` converted to luminance as above.

The metadata never carries patient identifiers (names, IDs, dates, UIDs).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from medclass.transforms.orientation import plane_affine, plane_of, to_display

logger = logging.getLogger(__name__)

__all__ = [
    "META_KEYS",
    "DICOM_SUFFIXES",
    "NIFTI_SUFFIXES",
    "ITK_SUFFIXES",
    "read_image",
    "ReadImage",
    "ReadImaged",
]

#: File name endings read as DICOM (other files are also detected by the ``DICM`` magic).
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
#: File name endings read with nibabel.
NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: File name endings read with MONAI ``LoadImage`` (ITK): 3D volumes, or 2D images for ``spatial_dims=2``.
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")

#: The keys every metadata dict holds (same keys and types for every source, so batches collate).
META_KEYS = (
    "filename_or_obj",  # str: the path, or the item id / name for arrays
    "source_format",  # str: "dicom" (files, multi-frame files and series folders), "pil:<FORMAT>", "array", "npy", "nifti", "itk"
    # tuple[int, ...]: spatial shape as stored: (rows, cols), 2D NIfTI / ITK (I, J), arrays (D, H, W), (I, J, K),
    # DICOM volumes (cols, rows, slices)
    "original_shape",
    "original_channels",  # int: channels as stored (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA)
    "original_dtype",  # str: numpy dtype of the stored values, e.g. "uint16"
    "photometric_interpretation",  # str: DICOM value, "" for other sources
    "modality",  # str: DICOM Modality (CR, DX, CT, MR, ...), "" when unknown
    "rescaled",  # bool: a non-identity modality LUT (slope / intercept or LUT) was applied
    "windowed",  # bool: a VOI LUT or window center / width was applied (values then in [0, 1])
    "window_center",  # float: the window used, NaN when none
    "window_width",  # float: NaN when none
    "inverted",  # bool: MONOCHROME1 / INVERSE data were inverted to MONOCHROME2 polarity
    "spacing",  # tuple[float, ...]: pixel / voxel size in mm per spatial axis (1.0 when unknown)
    "spatial_shape",  # np.ndarray[int64]: spatial shape of the returned array
    "source_affine",  # np.ndarray (4, 4) float64: voxel of the image as stored (original_shape order) -> RAS mm
    "world_affine",  # np.ndarray (4, 4) float64: voxel of the returned array -> RAS mm
)

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)



def _base_meta(name: str, source_format: str) -> dict[str, Any]:
    return {
        "filename_or_obj": name,
        "source_format": source_format,
        "original_shape": (),
        "original_channels": 1,
        "original_dtype": "",
        "photometric_interpretation": "",
        "modality": "",
        "rescaled": False,
        "windowed": False,
        "window_center": float("nan"),
        "window_width": float("nan"),
        "inverted": False,
        "spacing": (),
        "spatial_shape": np.zeros(0, dtype=np.int64),
        "source_affine": np.eye(4),
        "world_affine": np.eye(4),
    }


# --------------------------------------------------------------------------------------------------
# helpers


def _luminance(arr: np.ndarray) -> np.ndarray:
    """``(..., 3 or 4)`` colour -> ``(...)`` luminance (float64); exact when all channels are equal."""
    rgb = arr[..., :3]
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return rgb[..., 0].astype(np.float64)
    return rgb.astype(np.float64) @ _LUMA


def _to_float32(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{name}: unsupported pixel data type {arr.dtype}; expected integer, float or bool values")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if out.size == 0:
        raise ValueError(f"{name}: empty image of shape {tuple(arr.shape)}")
    if not np.isfinite(out).all():
        n_bad = int(out.size - np.count_nonzero(np.isfinite(out)))
        raise ValueError(f"{name}: image has {n_bad} NaN/Inf pixel value(s) (shape {tuple(arr.shape)})")
    return out


def _check_spatial_dims(spatial_dims: int) -> int:
    if isinstance(spatial_dims, bool) or not isinstance(spatial_dims, (int, np.integer)) or spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    return int(spatial_dims)


def _expected(spatial_dims: int) -> str:
    if spatial_dims == 2:
        return "a 2D image (H, W), (H, W, 3|4) or (1, H, W) for spatial_dims=2"
    return "a 3D volume (D, H, W) or (1, D, H, W) for spatial_dims=3"


def _array_to_channel_first(arr: np.ndarray, spatial_dims: int, name: str) -> tuple[np.ndarray, int, tuple[int, ...]]:
    """Array in one of the accepted layouts -> ``(1, *spatial)`` luminance, channels, spatial shape."""
    shape = tuple(int(s) for s in arr.shape)
    if spatial_dims == 2:
        if arr.ndim == 2:
            return arr[None], 1, shape
        if arr.ndim == 3:
            if shape[-1] == 1:
                return arr[..., 0][None], 1, shape[:2]
            if shape[-1] in (3, 4):
                return _luminance(arr)[None], shape[-1], shape[:2]
            if shape[0] == 1:
                return arr, 1, shape[1:]
            if shape[-1] == 2 or 4 < shape[-1] < min(shape[0], shape[1]):
                raise ValueError(
                    f"{name}: unexpected channel count {shape[-1]} in image of shape {shape}; "
                    f"expected 1, 3 (RGB) or 4 (RGBA) channels last: {_expected(spatial_dims)}"
                )
            raise ValueError(
                f"{name}: got an array of shape {shape}, which looks like a 3D volume, but expected "
                f"{_expected(spatial_dims)}"
            )
        raise ValueError(f"{name}: got an array of shape {shape} ({arr.ndim} dims), expected {_expected(spatial_dims)}")
    if arr.ndim == 3:
        return arr[None], 1, shape
    if arr.ndim == 4 and shape[0] == 1:
        return arr, 1, shape[1:]
    if arr.ndim == 4 and shape[-1] == 1:
        return arr[..., 0][None], 1, shape[:3]
    if arr.ndim == 2 or (arr.ndim == 3 and shape[-1] in (3, 4)):
        raise ValueError(f"{name}: got a 2D image of shape {shape}, expected {_expected(spatial_dims)}")
    raise ValueError(f"{name}: got an array of shape {shape} ({arr.ndim} dims), expected {_expected(spatial_dims)}")


def _has_dicom_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _lower_name(path: Path) -> str:
    return path.name.lower()


# --------------------------------------------------------------------------------------------------
# DICOM


def _dcmread(path: Path, force_only: bool = False):
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not force_only:
        try:
            return pydicom.dcmread(path)
        except InvalidDicomError:
            pass  # no preamble / DICM magic: old ACR-NEMA file, retry with force=True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, force=True)


def _ensure_transfer_syntax(ds) -> None:
    """ACR-NEMA files read with ``force=True`` have no transfer syntax: take it from the encoding read."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    if "TransferSyntaxUID" in meta:
        return
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if implicit is None:
        implicit = True
    if little is None:
        little = True
    if implicit:
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _window(x: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """Window center / width (DICOM PS3.3 C.11.2.1.2) onto ``[0, 1]``."""
    function = (function or "LINEAR").upper()
    if function == "LINEAR_EXACT":
        return np.clip((x - center) / width + 0.5, 0.0, 1.0)
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    if width < 1:
        raise ValueError(f"window width {width} < 1 is invalid for a LINEAR VOI function")
    if width == 1:
        return (x > center - 0.5).astype(np.float64)
    return np.clip((x - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)


def _first_value(value) -> float:
    from pydicom.multival import MultiValue

    if isinstance(value, (MultiValue, list, tuple)):
        value = value[0]
    return float(value)


def _stored_range(ds) -> tuple[float, float]:
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        return float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    return 0.0, float(2**bits - 1)


def _rescale_of(ds) -> tuple[float, float]:
    try:
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
    except (TypeError, ValueError):
        slope, intercept = 1.0, 0.0
    return slope, intercept


def _modality_range(ds, values: np.ndarray) -> tuple[float, float]:
    """The range of modality values the stored bits can encode (used to invert ``MONOCHROME1``)."""
    if "ModalityLUTSequence" in ds:
        return float(values.min()), float(values.max())
    slope, intercept = _rescale_of(ds)
    lo, hi = _stored_range(ds)
    lo, hi = sorted((lo * slope + intercept, hi * slope + intercept))
    return lo, hi


def _voi_and_polarity(
    x: np.ndarray,
    modality_out: np.ndarray,
    ds,
    voi: bool,
    name: str,
    meta: dict,
    value_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """Modality values -> optional VOI LUT / window -> ``MONOCHROME2`` polarity; updates ``meta``.

    ``x`` is the modality output as floats, ``modality_out`` the same values in the modality LUT's
    own dtype (a VOI LUT is indexed by integers); ``ds`` supplies the VOI and photometric elements;
    ``value_range`` is the modality range used to invert ``MONOCHROME1`` data when no window applies.
    """
    from pydicom.pixels import apply_voi_lut

    if voi:
        if "VOILUTSequence" in ds and len(ds.VOILUTSequence) > 0:
            item = ds.VOILUTSequence[0]
            lut_in = modality_out
            if not np.issubdtype(lut_in.dtype, np.integer):  # a LUT is indexed by integers
                lut_in = np.rint(lut_in).astype(np.int64)
            try:
                x = np.asarray(apply_voi_lut(lut_in, ds, index=0, prefer_lut=True), dtype=np.float64)
                bits = int(item.LUTDescriptor[2])
                x = np.clip(x / float(2**bits - 1), 0.0, 1.0)
                meta["windowed"] = True
            except Exception as e:
                raise ValueError(f"{name}: cannot apply the VOI LUT ({type(e).__name__}: {e})") from e
        elif "WindowCenter" in ds and "WindowWidth" in ds and ds.WindowCenter is not None and ds.WindowWidth:
            try:
                center = _first_value(ds.WindowCenter)
                width = _first_value(ds.WindowWidth)
            except (TypeError, ValueError, IndexError):
                center = width = float("nan")
            function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR")
            if not (np.isfinite(center) and np.isfinite(width)):
                logger.warning("%s: unreadable window center/width; window not applied", name)
            elif width >= 1 or (width > 0 and function.upper() != "LINEAR"):
                x = _window(x, center, width, function)
                meta.update(windowed=True, window_center=center, window_width=width)
            else:
                logger.warning(
                    "%s: invalid window width %s for VOI function %s; window not applied", name, width, function
                )
    pi = str(ds.get("PhotometricInterpretation", "") or "").upper()
    invert = pi == "MONOCHROME1" or str(ds.get("PresentationLUTShape", "") or "").upper() == "INVERSE"
    if invert:
        if meta["windowed"]:
            x = 1.0 - x
        else:
            lo, hi = value_range if value_range is not None else _modality_range(ds, x)
            x = (lo + hi) - x
        meta["inverted"] = True
    return x


def _pixel_spacing(ds) -> tuple[float, float] | None:
    """``(row spacing, column spacing)`` in mm from ``PixelSpacing`` / ``ImagerPixelSpacing``, or None."""
    for tag in ("PixelSpacing", "ImagerPixelSpacing"):
        try:
            sp = [float(v) for v in (ds.get(tag, None) or [])]
        except (TypeError, ValueError):
            continue
        if len(sp) >= 2 and sp[0] > 0 and sp[1] > 0 and all(np.isfinite(sp[:2])):
            return sp[0], sp[1]
    return None


def _slice_spacing(ds) -> float | None:
    """``SpacingBetweenSlices`` or else ``SliceThickness`` in mm, or None."""
    for tag in ("SpacingBetweenSlices", "SliceThickness"):
        try:
            v = float(ds.get(tag, None) or 0)
        except (TypeError, ValueError):
            continue
        if v > 0 and np.isfinite(v):
            return v
    return None


def _floats(value, n: int) -> np.ndarray | None:
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if arr.shape != (n,) or not np.isfinite(arr).all():
        return None
    return arr


def _directions(iop: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``ImageOrientationPatient`` -> unit row direction, column direction and slice normal (LPS)."""
    r, c = iop[:3], iop[3:]
    nr, nc = np.linalg.norm(r), np.linalg.norm(c)
    if nr < 1e-6 or nc < 1e-6 or abs(float(r @ c)) / (nr * nc) > 1e-2:
        raise ValueError(f"{name}: invalid ImageOrientationPatient {iop.tolist()} (not two orthogonal directions)")
    r, c = r / nr, c / nc
    return r, c, np.cross(r, c)


#: A gap between neighbouring slices of more than this many median spacings means missing slices.
SLICE_GAP_FACTOR = 1.5
#: Allowed deviation of a slice-to-slice spacing from the median, relative (and the absolute floor in mm).
SLICE_SPACING_RTOL = 0.02
SLICE_SPACING_ATOL = 0.02
#: Largest difference between the direction cosines of two slices of one volume.
ORIENTATION_ATOL = 1e-3


def _sort_slices(
    ipps: np.ndarray, normal: np.ndarray, labels: list[str], name: str, pixel_mm: float, what: str = "slice"
) -> tuple[np.ndarray, np.ndarray]:
    """Order slices by position along ``normal`` and check they form one evenly spaced stack.

    Args:
        ipps: ``(N, 3)`` ``ImagePositionPatient`` per slice (mm, LPS).
        normal: unit slice normal (row direction x column direction).
        labels: how to name each slice in errors (file name or ``frame k``).
        name: the folder / file the stack comes from (prefix of every error).
        pixel_mm: the smaller in-plane pixel spacing (tolerance of the in-plane alignment check).
        what: ``"slice"`` or ``"frame"``.

    Returns:
        ``(order, step)``: indices sorting the slices by increasing position along the normal, and the
        mean position step between neighbouring slices (the affine's slice axis; it has an in-plane
        component for gantry-tilted CT).

    Raises:
        ValueError: duplicated positions, missing slices, uneven spacing or slices off one line.
    """
    n = len(ipps)
    pos = ipps @ normal
    order = np.argsort(pos, kind="stable")
    p = pos[order]
    d = np.diff(p)
    moving = d[d > 1e-6]
    med = float(np.median(moving)) if moving.size else 0.0
    dup_tol = max(1e-3, 0.01 * med)
    dup = np.nonzero(d <= dup_tol)[0]
    if dup.size:
        k = int(dup[0])
        a, b = labels[order[k]], labels[order[k + 1]]
        raise ValueError(
            f"{name}: duplicated {what} positions: {dup.size} pair(s) of {what}s share a position (e.g. {a} and "
            f"{b} both at {p[k]:.3f} mm along the slice normal); a volume must hold each position once (not "
            f"several acquisitions, echoes or time points)"
        )
    gaps = np.nonzero(d > SLICE_GAP_FACTOR * med)[0]
    if gaps.size:
        k = int(gaps[0])
        missing = round(float(d[k] / med)) - 1
        raise ValueError(
            f"{name}: missing {what}s: a gap of {d[k]:.3f} mm between {labels[order[k]]} and "
            f"{labels[order[k + 1]]} where the median {what} spacing is {med:.3f} mm (about "
            f"{max(missing, 1)} {what}(s) missing; {len(gaps)} gap(s) in all)"
        )
    tol = max(SLICE_SPACING_RTOL * med, SLICE_SPACING_ATOL)
    uneven = np.nonzero(np.abs(d - med) > tol)[0]
    if uneven.size:
        k = int(uneven[np.argmax(np.abs(d[uneven] - med))])
        raise ValueError(
            f"{name}: uneven {what} spacing: spacings range from {d.min():.3f} to {d.max():.3f} mm (median "
            f"{med:.3f} mm, tolerance {tol:.3f} mm), e.g. {d[k]:.3f} mm between {labels[order[k]]} and "
            f"{labels[order[k + 1]]}"
        )
    sorted_ipps = ipps[order]
    step = (sorted_ipps[-1] - sorted_ipps[0]) / (n - 1)
    resid = sorted_ipps - (sorted_ipps[0] + np.arange(n)[:, None] * step)
    worst = float(np.abs(resid).max())
    if worst > max(0.5 * pixel_mm, 0.05):
        k = int(np.abs(resid).max(axis=1).argmax())
        raise ValueError(
            f"{name}: the {what}s are not stacked on one line: {labels[order[k]]} is {worst:.3f} mm off the line "
            f"through the first and last {what} positions"
        )
    return order, step


def _lps_to_ras_affine(
    row_dir: np.ndarray, col_dir: np.ndarray, step: np.ndarray, origin: np.ndarray, row_col_mm: tuple[float, float]
) -> np.ndarray:
    """Voxel ``(column i, row j, slice k)`` -> RAS world affine from DICOM (LPS) geometry.

    DICOM: ``P(i, j, k) = origin + i * col_spacing * row_dir + j * row_spacing * col_dir + k * step``
    (``row_dir`` is the direction along a row, i.e. of increasing column index). The MetaTensor
    convention (nibabel / MONAI) is RAS, so x and y change sign.
    """
    a = np.eye(4, dtype=np.float64)
    a[:3, 0] = row_dir * row_col_mm[1]
    a[:3, 1] = col_dir * row_col_mm[0]
    a[:3, 2] = step
    a[:3, 3] = origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ a


def _volume_meta(name: str, ds, dtype: np.dtype, shape: tuple[int, int, int], affine: np.ndarray) -> dict:
    meta = _base_meta(name, "dicom")
    meta["photometric_interpretation"] = str(ds.get("PhotometricInterpretation", "") or "").upper()
    meta["modality"] = str(ds.get("Modality", "") or "")
    meta["original_dtype"] = np.dtype(dtype).newbyteorder("=").name
    meta["original_channels"] = int(ds.get("SamplesPerPixel", 1) or 1)
    meta["original_shape"] = tuple(int(s) for s in shape)
    meta["spacing"] = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
    return meta


def _to_ijk(stack: np.ndarray) -> np.ndarray:
    """``(slices, rows, columns)`` -> channel-first ``(1, columns, rows, slices)`` ``float32``."""
    return np.ascontiguousarray(np.asarray(stack, dtype=np.float32).transpose(2, 1, 0)[None])


def _fg_item(groups, seq: str):
    """The first item of functional group ``seq`` in a functional-groups item, or None."""
    if groups is None or seq not in groups:
        return None
    items = getattr(groups, seq, None)
    return items[0] if items is not None and len(items) > 0 else None


def _read_dicom_multiframe(ds, stored: np.ndarray, voi: bool, name: str) -> tuple[np.ndarray, dict, np.ndarray]:
    """A single-file multi-frame (e.g. Enhanced CT / MR) DICOM -> ``(1, columns, rows, frames)`` and RAS affine.

    Geometry comes from the per-frame / shared functional groups (Enhanced objects), or the top-level
    ``ImageOrientationPatient`` / ``ImagePositionPatient`` with ``GridFrameOffsetVector``; frames are
    sorted by position along the slice normal and checked like a series. Without any geometry the
    frames are taken in stored order as an axial stack (a warning says so).
    """
    from pydicom.pixels import apply_modality_lut

    frames, rows, cols = (int(s) for s in stored.shape[:3])
    shared = _fg_item(ds, "SharedFunctionalGroupsSequence")
    per = ds.get("PerFrameFunctionalGroupsSequence", None)
    per = list(per) if per is not None and len(per) == frames else [None] * frames

    def group_value(f: int, seq: str, tag: str):
        for groups in (per[f], shared):
            item = _fg_item(groups, seq)
            if item is not None and tag in item and item[tag].value not in (None, ""):
                return item[tag].value
        return ds.get(tag, None)

    # intensities: per-frame rescale from the functional groups, else the top-level modality LUT
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples > 1:
        values = _luminance(stored)
        modality_out = values
        rescales = None
    elif any(
        _fg_item(g, "PixelValueTransformationSequence") is not None for g in (per[0], shared)
    ) and "ModalityLUTSequence" not in ds:
        rescales = []
        for f in range(frames):
            slope = group_value(f, "PixelValueTransformationSequence", "RescaleSlope")
            intercept = group_value(f, "PixelValueTransformationSequence", "RescaleIntercept")
            rescales.append((float(slope if slope not in (None, "") else 1), float(intercept or 0)))
        sl = np.asarray([s for s, _ in rescales])[:, None, None]
        ic = np.asarray([i for _, i in rescales])[:, None, None]
        values = stored.astype(np.float64) * sl + ic
        modality_out = values
    else:
        rescales = None
        modality_out = np.asarray(apply_modality_lut(stored, ds))
        values = modality_out.astype(np.float64)

    # geometry
    iops = [_floats(group_value(f, "PlaneOrientationSequence", "ImageOrientationPatient") or [], 6) for f in range(frames)]
    ipps = [_floats(group_value(f, "PlanePositionSequence", "ImagePositionPatient") or [], 3) for f in range(frames)]
    measures = _fg_item(shared, "PixelMeasuresSequence") or _fg_item(per[0], "PixelMeasuresSequence")
    row_col = _pixel_spacing(measures) if measures is not None else None
    row_col = row_col or _pixel_spacing(ds) or (1.0, 1.0)
    thickness = (_slice_spacing(measures) if measures is not None else None) or _slice_spacing(ds)
    labels = [f"frame {f + 1}" for f in range(frames)]
    order = np.arange(frames)
    if all(o is not None for o in iops):
        ref = iops[0]
        bad = [f for f in range(frames) if np.abs(iops[f] - ref).max() > ORIENTATION_ATOL]
        if bad:
            raise ValueError(
                f"{name}: frames of different orientation: frame {bad[0] + 1} has ImageOrientationPatient "
                f"{np.round(iops[bad[0]], 4).tolist()}, frame 1 {np.round(ref, 4).tolist()}"
            )
        r, c, n = _directions(ref, name)
        positions = None
        if all(p is not None for p in ipps):
            positions = np.stack(ipps)
        elif ipps[0] is not None and "GridFrameOffsetVector" in ds:
            offsets = _floats(ds.GridFrameOffsetVector, frames)
            if offsets is not None:
                positions = ipps[0][None] + offsets[:, None] * n[None]
        if positions is not None:
            order, step = _sort_slices(positions, n, labels, name, min(row_col), what="frame")
            origin = positions[order[0]]
        else:
            logger.warning(
                "%s: no per-frame positions; frames taken in stored order, %s mm apart along the slice normal",
                name, thickness or 1.0,
            )
            step = n * (thickness or 1.0)
            origin = ipps[0] if ipps[0] is not None else np.zeros(3)
    else:
        logger.warning(
            "%s: no ImageOrientationPatient; frames taken in stored order as an axial stack (%s mm apart)",
            name, thickness or 1.0,
        )
        r, c = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
        step = np.array([0.0, 0.0, thickness or 1.0])
        origin = ipps[0] if ipps[0] is not None else np.zeros(3)

    values = values[order]
    modality_out = modality_out[order] if np.ndim(modality_out) == 3 else modality_out
    affine = _lps_to_ras_affine(r, c, step, origin, row_col)
    meta = _volume_meta(name, ds, stored.dtype, (cols, rows, frames), affine)
    if samples == 1:
        if rescales is not None:
            meta["rescaled"] = any(s != 1 or i != 0 for s, i in rescales)
            lo, hi = _stored_range(ds)
            ends = [v for s, i in rescales for v in (lo * s + i, hi * s + i)]
            value_range = (min(ends), max(ends))
        else:
            slope, intercept = _rescale_of(ds)
            meta["rescaled"] = bool("ModalityLUTSequence" in ds or slope != 1 or intercept != 0)
            value_range = _modality_range(ds, values)
        values = _voi_and_polarity(values, modality_out, ds, voi, name, meta, value_range)
    return _to_ijk(values), meta, affine


def _read_dicom(path: Path, spatial_dims: int, voi: bool, name: str) -> tuple[np.ndarray, dict, np.ndarray | None]:
    from pydicom.pixels import apply_modality_lut

    try:
        ds = _dcmread(path)
        if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
            raise ValueError("no pixel data element")
        _ensure_transfer_syntax(ds)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        rows, cols = int(ds.Rows), int(ds.Columns)
    except Exception as e:  # pydicom raises many types for corrupt / truncated / unsupported files
        raise ValueError(f"{name}: cannot read image ({type(e).__name__}: {e})") from e

    # check the layout before decoding (a large multi-frame file is not decoded just to be rejected)
    shape = ((frames,) if frames > 1 else ()) + (rows, cols) + ((samples,) if samples > 1 else ())
    if frames > 1 and spatial_dims == 2:
        raise ValueError(
            f"{name}: multi-frame DICOM with {frames} frames (pixel array shape {shape}); expected {_expected(2)}"
        )
    if frames == 1 and spatial_dims == 3:
        raise ValueError(
            f"{name}: single-frame DICOM of shape {shape} is a 2D image; expected {_expected(3)} (a multi-frame "
            f"DICOM file, or a DICOM series as a folder of slices)"
        )
    if samples not in (1, 3, 4):
        raise ValueError(f"{name}: unexpected channel count {samples} (SamplesPerPixel) in DICOM of shape {shape}")
    try:
        stored = ds.pixel_array
    except Exception as e:
        raise ValueError(f"{name}: cannot read image ({type(e).__name__}: {e})") from e

    if frames > 1:
        if stored.shape[:3] != (frames, rows, cols):
            raise ValueError(f"{name}: pixel array of shape {stored.shape}, expected {shape}")
        return _read_dicom_multiframe(ds, stored, voi, name)

    meta = _base_meta(name, "dicom")
    pi = str(ds.get("PhotometricInterpretation", "") or "").upper()
    meta["photometric_interpretation"] = pi
    meta["modality"] = str(ds.get("Modality", "") or "")
    meta["original_dtype"] = stored.dtype.newbyteorder("=").name
    meta["original_channels"] = samples
    meta["original_shape"] = (rows, cols)

    if samples > 1:
        # colour (RGB / YBR converted to RGB by pydicom): no modality / VOI LUT defined, use luminance
        x = _luminance(stored)
    else:
        modality_out = np.asarray(apply_modality_lut(stored, ds))
        slope, intercept = _rescale_of(ds)
        meta["rescaled"] = bool("ModalityLUTSequence" in ds or slope != 1 or intercept != 0)
        x = modality_out.astype(np.float64)
        x = _voi_and_polarity(x, modality_out, ds, voi, name, meta)

    x, _, _ = _array_to_channel_first(x, 2, name)
    return x, meta, _dicom_plane(ds, name)


def _dicom_plane(ds, name: str) -> np.ndarray:
    """RAS affine of a single-frame DICOM's stored ``(rows, columns)`` grid (ITK's placement without IOP)."""
    row_col = _pixel_spacing(ds) or (1.0, 1.0)
    r, c = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    iop = _floats(ds.get("ImageOrientationPatient", None) or [], 6)
    if iop is not None:
        try:
            r, c, _ = _directions(iop, name)
        except ValueError as e:
            logger.warning("%s; the stored pixel order is kept", e)
    ipp = _floats(ds.get("ImagePositionPatient", None) or [], 3)
    return plane_affine(r, c, row_col, ipp if ipp is not None else np.zeros(3), _slice_spacing(ds) or 1.0)


# --------------------------------------------------------------------------------------------------
# DICOM series folders


def _dicom_header(path: Path, name: str):
    """``(header, None)`` for a DICOM image file, ``(None, reason)`` for a file to skip.

    A file with the ``DICM`` magic that cannot be parsed raises: a broken slice makes the series
    incomplete, it is not a stray file. Files without the magic are tried as old (ACR-NEMA style)
    DICOM and skipped when that fails, whatever their suffix (e.g. macOS ``._IM0001.dcm`` resource
    files); a real slice lost that way still shows up as a missing slice.
    """
    import pydicom

    try:
        if path.stat().st_size == 0:
            return None, "empty file"
    except OSError as e:
        return None, f"cannot stat ({e})"
    magic = _has_dicom_magic(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=not magic)
        has_image = "Rows" in ds and "Columns" in ds
        if has_image:
            int(ds.Rows), int(ds.Columns)
    except Exception as e:
        if magic:
            raise ValueError(f"{name}: cannot read DICOM file {path.name} ({type(e).__name__}: {e})") from e
        return None, "not a DICOM file"
    if not has_image:
        if magic or "SOPClassUID" in ds:
            return None, "a DICOM file without an image (e.g. DICOMDIR, report or presentation state)"
        return None, "not a DICOM file"
    return ds, None


def _series_id(ds) -> str:
    return str(ds.get("SeriesInstanceUID", "") or "")


def _read_dicom_series(folder: Path, voi: bool, name: str) -> tuple[np.ndarray, dict, np.ndarray]:
    """A folder holding one DICOM series -> ``(1, columns, rows, slices)`` ``float32``, meta, RAS affine.

    Slices are ordered by position along the slice normal (``ImagePositionPatient`` . normal), not by
    file name or ``InstanceNumber``; the series is validated (one series, one size / orientation /
    pixel spacing, no duplicated positions, no missing slices, even spacing). Files that are not
    DICOM images (``.txt``, ``.DS_Store``, ``DICOMDIR``, ...) and subfolders are skipped with a warning.
    """
    from pydicom.pixels import apply_modality_lut

    headers: list[tuple[Path, Any]] = []
    entries = sorted(folder.iterdir())
    for p in entries:
        if p.is_dir():
            logger.warning("%s: skipping subfolder %s (a series folder is read without recursion)", name, p.name)
            continue
        ds, reason = _dicom_header(p, name)
        if ds is None:
            logger.warning("%s: skipping %s: %s", name, p.name, reason)
            continue
        headers.append((p, ds))
    if not headers:
        raise ValueError(f"{name}: no DICOM image files in the folder ({len(entries)} entries)")

    # one series
    by_series: dict[str, list[Path]] = {}
    for p, ds in headers:
        by_series.setdefault(_series_id(ds), []).append(p)
    if len(by_series) > 1:
        parts = []
        for uid, files in by_series.items():
            ds = next(d for q, d in headers if q == files[0])
            desc = str(ds.get("SeriesDescription", "") or "").strip()
            parts.append(
                f"series {ds.get('SeriesNumber', '?')}{' ' + repr(desc) if desc else ''} "
                f"(UID ...{uid[-8:] if uid else '<none>'}): {len(files)} file(s), e.g. {files[0].name}"
            )
        raise ValueError(
            f"{name}: mixed series: the folder holds {len(by_series)} series (different SeriesInstanceUID): "
            f"{'; '.join(parts)}; put each series in its own folder"
        )

    # a single multi-frame file
    multi = [p for p, ds in headers if int(ds.get("NumberOfFrames", 1) or 1) > 1]
    if multi:
        if len(headers) == 1:
            arr, meta, affine = _read_dicom(multi[0], 3, voi, str(multi[0]))
            return arr, meta, affine
        raise ValueError(
            f"{name}: a series folder holds either single-frame slices or one multi-frame file, found "
            f"{len(multi)} multi-frame file(s) (e.g. {multi[0].name}) among {len(headers)} DICOM files"
        )
    if len(headers) == 1:
        p, ds = headers[0]
        raise ValueError(
            f"{name}: the series has a single slice ({p.name}, {int(ds.Rows)}x{int(ds.Columns)}): a 2D image; "
            f"expected {_expected(3)}"
        )

    # one slice size, orientation and pixel spacing
    sizes: dict[tuple[int, int], list[str]] = {}
    for p, ds in headers:
        sizes.setdefault((int(ds.Rows), int(ds.Columns)), []).append(p.name)
    if len(sizes) > 1:
        desc = "; ".join(f"{r}x{c}: {len(f)} file(s), e.g. {f[0]}" for (r, c), f in sizes.items())
        raise ValueError(f"{name}: slices of different size (rows x columns): {desc}")
    rows, cols = next(iter(sizes))
    labels = [p.name for p, _ in headers]
    iops = [_floats(ds.get("ImageOrientationPatient", None) or [], 6) for _, ds in headers]
    ipps = [_floats(ds.get("ImagePositionPatient", None) or [], 3) for _, ds in headers]
    spacings = [_pixel_spacing(ds) for _, ds in headers]
    row_col = spacings[0] or (1.0, 1.0)
    for lab, sp in zip(labels, spacings):
        if not np.allclose(sp or (1.0, 1.0), row_col, rtol=1e-3):
            raise ValueError(
                f"{name}: slices of different pixel spacing: {lab} has {sp}, {labels[0]} has {spacings[0]} (mm)"
            )

    if any(o is not None for o in iops) or any(p is not None for p in ipps):
        for what, vals in (("ImageOrientationPatient", iops), ("ImagePositionPatient", ipps)):
            missing = [lab for lab, v in zip(labels, vals) if v is None]
            if missing:
                raise ValueError(
                    f"{name}: {len(missing)} slice(s) have no valid {what} (e.g. {missing[0]}); the slices cannot "
                    f"be placed in space"
                )
        ref = iops[0]
        for lab, o in zip(labels, iops):
            if np.abs(o - ref).max() > ORIENTATION_ATOL:
                raise ValueError(
                    f"{name}: slices of different orientation: {lab} has ImageOrientationPatient "
                    f"{np.round(o, 4).tolist()}, {labels[0]} has {np.round(ref, 4).tolist()}"
                )
        r, c, n = _directions(ref, name)
        positions = np.stack(ipps)
        order, step = _sort_slices(positions, n, labels, name, min(row_col))
        origin = positions[order[0]]
    else:
        # no geometry at all (e.g. secondary capture): InstanceNumber order, assumed axial
        numbers = []
        for lab, (_, ds) in zip(labels, headers):
            try:
                numbers.append(int(ds.InstanceNumber))
            except (AttributeError, TypeError, ValueError):
                raise ValueError(
                    f"{name}: {lab} has neither ImagePositionPatient nor InstanceNumber; the slices cannot be ordered"
                ) from None
        if len(set(numbers)) != len(numbers):
            raise ValueError(f"{name}: no slice positions and duplicated InstanceNumber values; cannot order the slices")
        thickness = _slice_spacing(headers[0][1]) or 1.0
        logger.warning(
            "%s: no ImagePositionPatient / ImageOrientationPatient; slices ordered by InstanceNumber as an axial "
            "stack %s mm apart",
            name, thickness,
        )
        order = np.argsort(numbers, kind="stable")
        r, c = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
        step = np.array([0.0, 0.0, thickness])
        origin = np.zeros(3)

    # pixels, slice by slice (each with its own modality LUT / rescale)
    ordered = [headers[i][0] for i in order]
    stack = np.empty((len(ordered), rows, cols), dtype=np.float32)
    modality_stack = None
    lo = hi = None
    rescaled = False
    first_dtype = None
    ref_ds = None
    for k, p in enumerate(ordered):
        try:
            ds = _dcmread(p)
            _ensure_transfer_syntax(ds)
            stored = ds.pixel_array
        except Exception as e:
            raise ValueError(f"{name}: cannot read slice {p.name} ({type(e).__name__}: {e})") from e
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        if samples > 1:
            values = _luminance(stored)
        else:
            if stored.shape != (rows, cols):
                raise ValueError(f"{name}: slice {p.name} has pixel array shape {stored.shape}, expected {(rows, cols)}")
            mod = np.asarray(apply_modality_lut(stored, ds))
            values = mod
            slope, intercept = _rescale_of(ds)
            rescaled = rescaled or bool("ModalityLUTSequence" in ds or slope != 1 or intercept != 0)
            s_lo, s_hi = _modality_range(ds, mod)
            lo = s_lo if lo is None else min(lo, s_lo)
            hi = s_hi if hi is None else max(hi, s_hi)
            if "ModalityLUTSequence" in ds or "VOILUTSequence" in ds:
                if modality_stack is None:
                    modality_stack = np.empty((len(ordered), rows, cols), dtype=mod.dtype)
                modality_stack[k] = mod
        stack[k] = values
        if first_dtype is None:
            first_dtype = stored.dtype
        if k == len(ordered) // 2:
            ref_ds = ds  # VOI / photometric elements from the middle slice

    affine = _lps_to_ras_affine(r, c, step, origin, row_col)
    meta = _volume_meta(name, ref_ds, first_dtype, (cols, rows, len(ordered)), affine)
    meta["rescaled"] = rescaled
    if int(ref_ds.get("SamplesPerPixel", 1) or 1) == 1:
        mod_values = modality_stack if modality_stack is not None else stack
        stack = _voi_and_polarity(stack, mod_values, ref_ds, voi, name, meta, (lo, hi))
    logger.debug("%s: %d slices, %dx%d, spacing %s mm", name, len(ordered), rows, cols, meta["spacing"])
    return _to_ijk(stack), meta, affine


# --------------------------------------------------------------------------------------------------
# PIL


def _read_pil(path: Path, spatial_dims: int, name: str) -> tuple[np.ndarray, dict] | None:
    """Read with PIL; ``None`` when PIL does not recognise the format."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        im = Image.open(path)
    except UnidentifiedImageError:
        return None
    except Exception as e:
        raise ValueError(f"{name}: cannot read image ({type(e).__name__}: {e})") from e
    with im:
        fmt = str(im.format or "unknown")
        n_frames = int(getattr(im, "n_frames", 1) or 1)
        if n_frames > 1:
            raise ValueError(
                f"{name}: {fmt} file with {n_frames} frames/pages of size {im.size[1]}x{im.size[0]}; "
                f"expected a single 2D image"
            )
        if spatial_dims == 3:
            raise ValueError(
                f"{name}: {fmt} image of shape ({im.size[1]}, {im.size[0]}) is a 2D image; expected {_expected(3)}"
            )
        try:
            im.load()
            transposed = ImageOps.exif_transpose(im)
            if transposed is not None and transposed is not im:
                logger.debug("%s: applied EXIF orientation", name)
                im2 = transposed
            else:
                im2 = im
            mode = im2.mode
            channels = {"1": 1, "L": 1, "P": 1, "LA": 2, "La": 2, "PA": 2, "RGB": 3, "RGBA": 4, "RGBa": 4}.get(
                mode, len(im2.getbands())
            )
            if mode in ("L", "F") or mode.startswith("I;16") or mode == "I":
                arr = np.asarray(im2)
            elif mode == "1":
                arr = np.asarray(im2.convert("L"))
            elif mode in ("LA", "La"):
                arr = np.asarray(im2.convert("LA"))[..., 0]
            elif mode in ("RGB", "RGBA", "RGBa", "RGBX"):
                arr = _luminance(np.asarray(im2))
            elif mode in ("P", "PA"):
                arr = _luminance(np.asarray(im2.convert("RGBA")))
            elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                arr = _luminance(np.asarray(im2.convert("RGB")))
            else:
                arr = np.asarray(im2.convert("F"))
        except ValueError:
            raise
        except Exception as e:  # truncated / corrupt data surface at load time as OSError, SyntaxError, ...
            raise ValueError(f"{name}: cannot read image ({type(e).__name__}: {e})") from e
    if arr.ndim != 2:
        raise ValueError(f"{name}: unexpected {fmt} pixel array of shape {arr.shape} (mode {mode}); expected (H, W)")
    meta = _base_meta(name, f"pil:{fmt}")
    meta["original_shape"] = tuple(int(s) for s in arr.shape)
    meta["original_channels"] = int(channels)
    meta["original_dtype"] = {"1": "bool", "F": "float32", "I": "int32"}.get(
        mode, "uint16" if mode.startswith("I;16") else "uint8"
    )
    meta["spacing"] = (1.0, 1.0)
    return arr[None], meta


# --------------------------------------------------------------------------------------------------
# volumes


def _read_nifti(path: Path, spatial_dims: int, name: str) -> tuple[np.ndarray, dict, np.ndarray]:
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
        affine = np.asarray(img.affine, dtype=np.float64)
        zooms = tuple(float(z) for z in img.header.get_zooms())
        dtype = str(img.get_data_dtype())
    except Exception as e:
        raise ValueError(f"{name}: cannot read image ({type(e).__name__}: {e})") from e
    shape = tuple(int(s) for s in data.shape)
    if spatial_dims == 2:
        data, affine = plane_of(data, affine, name, "NIfTI")  # spacing: from the display affine (read_image)
    while data.ndim > spatial_dims and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != spatial_dims:
        if data.ndim > spatial_dims:
            what = f"a {data.ndim}D image (e.g. a time series, diffusion directions or several volumes)"
        else:
            what = f"a {data.ndim}D image"
        raise ValueError(
            f"{name}: NIfTI image of shape {shape} is {what}; expected {spatial_dims} spatial dims "
            f"({_expected(spatial_dims)})"
        )
    meta = _base_meta(name, "nifti")
    meta["original_shape"] = tuple(int(s) for s in data.shape)
    meta["original_dtype"] = dtype
    meta["spacing"] = tuple(zooms[:spatial_dims]) + (1.0,) * max(0, spatial_dims - len(zooms))
    return data[None], meta, affine


def _read_itk(path: Path, spatial_dims: int, name: str) -> tuple[np.ndarray, dict, np.ndarray]:
    from monai.transforms import LoadImage

    try:
        data, m = LoadImage(image_only=False, ensure_channel_first=False, reader="ITKReader")(str(path))
    except Exception as e:
        raise ValueError(f"{name}: cannot read image ({type(e).__name__}: {e})") from e
    arr = np.asarray(data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else data)
    shape = tuple(int(s) for s in arr.shape)
    affine = np.asarray(m.get("affine", np.eye(arr.ndim + 1)), dtype=np.float64)
    if spatial_dims == 2:
        arr, affine = plane_of(arr, affine, name, "ITK")  # spacing: from the display affine (read_image)
    else:
        while arr.ndim > 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim != 3:
            raise ValueError(f"{name}: volume of shape {shape}; expected {_expected(3)}")
    meta = _base_meta(name, "itk")
    meta["original_shape"] = tuple(int(s) for s in arr.shape)
    meta["original_dtype"] = str(arr.dtype)
    meta["spacing"] = tuple(float(s) for s in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    meta["modality"] = str(m.get("0008|0060", "") or "").strip()
    return arr[None], meta, affine


# --------------------------------------------------------------------------------------------------
# public API


def read_image(
    src: str | os.PathLike | np.ndarray | torch.Tensor,
    spatial_dims: int = 2,
    voi: bool = True,
    name: str | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read one image into a single-channel, channel-first ``float32`` array.

    Args:
        src: a file path (DICOM, PNG / JPEG / TIFF / BMP / ... via PIL, NIfTI, ``.npy``, ITK formats;
            for 3D also a multi-frame DICOM file or a folder holding one DICOM series), or an array:
            2D ``(H, W)``, ``(H, W, 1|3|4)`` or ``(1, H, W)``; 3D ``(D, H, W)`` or ``(1, D, H, W)``.
            MedMNIST ``uint8`` arrays fit directly.
        spatial_dims: 2 for radiographs / slices, 3 for volumes.
        voi: for DICOM, apply the VOI LUT or the first Window Center / Width when present (values
            then in ``[0, 1]``; for a series, the middle slice's window applies to the whole volume);
            False keeps modality units (e.g. CT Hounsfield units).
        name: how to name an array source in metadata and error messages (e.g. the item id);
            ignored for paths.

    Returns:
        ``(array, meta)``: ``array`` is ``float32`` of shape ``(1, H, W)`` (2D) or, for 3D,
        ``(1, D, H, W)`` (arrays), ``(1, I, J, K)`` (NIfTI / ITK voxel order) or ``(1, columns, rows,
        slices)`` (DICOM volumes), all values finite, in source units (see the module docstring).
        2D images are in display order (see :mod:`medclass.transforms.orientation`): the same image as
        DICOM, PNG or a NIfTI / NRRD / MHA written from it gives the same array. ``meta`` holds the keys
        of :data:`META_KEYS` (``world_affine``: the returned array's voxel to RAS world, mm;
        ``source_affine``: the same for the image as stored, in ``original_shape`` order), plus
        ``"affine"`` (4x4 ``float64``, voxel to RAS world, mm) for NIfTI / ITK / DICOM volumes.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: unreadable, truncated or unsupported file; wrong number of spatial dims for
            ``spatial_dims`` (a 2D image for 3D, a 4D volume); a 2D NIfTI / ITK affine that cannot place
            the image (zero-length or parallel in-plane axes); unexpected channel count; NaN/Inf
            pixels; an invalid DICOM series (mixed series, different slice sizes / orientations,
            duplicated positions, missing slices, uneven spacing). The message names the file or
            the series folder.
        TypeError: ``src`` is neither a path nor an array, or has a non-numeric dtype.
    """
    spatial_dims = _check_spatial_dims(spatial_dims)
    affine = None
    if isinstance(src, torch.Tensor):
        src = src.detach().cpu().numpy()
    if isinstance(src, np.ndarray):
        label = str(name) if name is not None else "<array>"
        arr = src
        if arr.dtype.byteorder not in "=|":
            arr = arr.astype(arr.dtype.newbyteorder("="))
        arr32 = _to_float32(arr, label)
        out, channels, sp = _array_to_channel_first(arr32, spatial_dims, label)
        meta = _base_meta(label, "array")
        meta.update(original_shape=sp, original_channels=channels, original_dtype=str(arr.dtype))
        meta["spacing"] = (1.0,) * spatial_dims
    elif isinstance(src, (str, os.PathLike)):
        path = Path(src).expanduser()
        label = str(path)
        if not path.exists():
            raise FileNotFoundError(f"{label}: image file not found")
        lname = _lower_name(path)
        if path.is_dir():
            if spatial_dims != 3:
                raise ValueError(f"{label}: DICOM series folders are volumes and need spatial_dims=3, got {spatial_dims}")
            out, meta, affine = _read_dicom_series(path, voi, label)
        elif path.stat().st_size == 0:
            raise ValueError(f"{label}: cannot read image (empty file)")
        elif lname.endswith(NIFTI_SUFFIXES):
            out, meta, affine = _read_nifti(path, spatial_dims, label)
        elif lname.endswith(ITK_SUFFIXES):
            out, meta, affine = _read_itk(path, spatial_dims, label)
        elif lname.endswith(".npy"):
            try:
                arr = np.load(path, allow_pickle=False)
            except Exception as e:
                raise ValueError(f"{label}: cannot read image ({type(e).__name__}: {e})") from e
            out, meta = read_image(arr, spatial_dims=spatial_dims, name=label)
            meta["source_format"] = "npy"
            return out, meta
        elif lname.endswith(DICOM_SUFFIXES) or _has_dicom_magic(path):
            out, meta, affine = _read_dicom(path, spatial_dims, voi, label)
        else:
            res = _read_pil(path, spatial_dims, label)
            if res is None:
                # last resort: DICOM without extension, preamble or magic (old ACR-NEMA)
                try:
                    out, meta, affine = _read_dicom(path, spatial_dims, voi, label)
                except ValueError as e:
                    raise ValueError(
                        f"{label}: cannot read image (not a recognised image format: neither PIL nor pydicom "
                        f"could read it; {e})"
                    ) from e
            else:
                out, meta = res
        if out.dtype != np.float32 or not out.flags.c_contiguous:
            out = np.ascontiguousarray(out, dtype=np.float32)
        if not np.isfinite(out).all():
            n_bad = int(out.size - np.count_nonzero(np.isfinite(out)))
            raise ValueError(f"{label}: image has {n_bad} NaN/Inf pixel value(s) (shape {tuple(out.shape)})")
    else:
        raise TypeError(
            f"image source must be a file path or a numpy array / torch tensor, got {type(src).__name__}"
        )
    out = np.ascontiguousarray(out, dtype=np.float32)
    if spatial_dims == 3 and 1 in out.shape[1:]:
        raise ValueError(
            f"{label}: volume of shape {tuple(out.shape[1:])} has a single slice along axis "
            f"{out.shape[1:].index(1)}: it is a 2D image; expected {_expected(3)}"
        )
    if spatial_dims == 2:  # display order from the source's geometry (medclass.transforms.orientation)
        plane = affine if affine is not None else plane_affine(spacing=meta["spacing"])
        out, world = to_display(out, plane, label)
        meta["spacing"] = tuple(float(s) for s in np.linalg.norm(world[:3, :2], axis=0))
        meta["source_affine"], meta["world_affine"] = plane, world
    else:
        if affine is not None:
            meta["affine"] = affine
        world = affine if affine is not None else np.diag([*meta["spacing"], 1.0])
        meta["source_affine"], meta["world_affine"] = world.copy(), world.copy()
    meta["spatial_shape"] = np.asarray(out.shape[1:], dtype=np.int64)
    return out, meta


class ReadImage(Transform):
    """Read an image (path or array) into a ``(1, H, W)`` or 3D ``(1, *spatial)`` ``float32`` :class:`monai.data.MetaTensor`.

    The array work is :func:`read_image`; the result's ``.meta`` holds :data:`META_KEYS` (with
    ``filename_or_obj`` the path, or ``name`` / ``"<array>"`` for arrays) and ``.affine`` is the
    NIfTI / ITK / DICOM volume's RAS affine, for 3D arrays the identity, and for 2D the in-plane pixel
    affine ``diag(row_spacing, col_spacing, 1, 1)`` of the display-order array: MONAI's 2D resampling
    (``Spacing``, ``ResampleToMatch``) inverts the affine's x/y block, which is singular for a coronal or
    sagittal plane, so the patient placement of a 2D image is ``.meta["world_affine"]`` instead (write a
    map with it, or use :func:`~medclass.transforms.orientation.input_geometry` to put it back on the
    input file's own grid).

    Args:
        spatial_dims: 2 or 3.
        voi: apply the DICOM VOI LUT / window when present (see :func:`read_image`).
    """

    def __init__(self, spatial_dims: int = 2, voi: bool = True) -> None:
        self.spatial_dims = _check_spatial_dims(spatial_dims)
        self.voi = bool(voi)

    def __call__(self, src: Any, name: str | None = None) -> MetaTensor:
        """Read ``src``; ``name`` labels array sources (e.g. the item id)."""
        arr, meta = read_image(src, spatial_dims=self.spatial_dims, voi=self.voi, name=name)
        affine = meta.pop("affine", None)
        if affine is None:
            affine = np.eye(4, dtype=np.float64)
            for i, s in enumerate(meta["spacing"][:3]):
                affine[i, i] = s
        return MetaTensor(torch.from_numpy(arr), affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta)


class ReadImaged(MapTransform):
    """Dictionary wrapper of :class:`ReadImage`.

    Replaces ``data[key]`` (path or array) by the ``(1, H, W)`` or 3D ``(1, *spatial)`` :class:`~monai.data.MetaTensor`;
    array sources are named by ``data[id_key]`` (so ``meta["filename_or_obj"]`` is the item id and
    errors name it). Other fields (``id``, ``label``, ``patient_id``, ...) pass through untouched.

    Args:
        keys: keys holding image sources, default ``("image",)``.
        spatial_dims: 2 or 3.
        voi: apply the DICOM VOI LUT / window when present.
        id_key: the item's id field used to name array sources.
        allow_missing_keys: do not raise when a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection = ("image",),
        spatial_dims: int = 2,
        voi: bool = True,
        id_key: str = "id",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.reader = ReadImage(spatial_dims=spatial_dims, voi=voi)
        self.id_key = id_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Read every key of ``data``; returns a new dict."""
        d = dict(data)
        item_id = d.get(self.id_key)
        for key in self.key_iterator(d):
            src = d[key]
            name = None
            if not isinstance(src, (str, os.PathLike)):
                name = str(item_id) if item_id is not None else f"<array {key}>"
            d[key] = self.reader(src, name=name)
        return d

"""DICOM files: single-frame images and multi-frame volumes, with the modality LUT (rescale), the VOI LUT or
window, and ``MONOCHROME1`` inverted to ``MONOCHROME2`` polarity (see :mod:`medclass.transforms.io` for the
conventions). The pixel helpers here serve the series reader too
(:mod:`~medclass.transforms.readers.dicom_series`)."""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from medclass.transforms.orientation import plane_affine
from medclass.transforms.readers.base import (
    DICOM_UID_KEYS,
    Loaded,
    MedclassImageReader,
    array_to_channel_first,
    base_meta,
    expected,
    has_dicom_magic,
    luminance,
)
from medclass.transforms.readers.dicom_geometry import (
    ORIENTATION_ATOL,
    directions,
    floats,
    lps_to_ras_affine,
    pixel_spacing,
    slice_spacing,
    sort_slices,
)
from medclass.vocab import DICOM_SUFFIXES

logger = logging.getLogger(__name__)

__all__ = [
    "DicomReader", "dcmread", "dicom_uids", "ensure_transfer_syntax", "modality_range", "read_dicom_file", "rescale_of",
    "stored_range", "to_ijk", "voi_and_polarity", "volume_meta",
]


def dcmread(path: Path, force_only: bool = False):
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


def ensure_transfer_syntax(ds) -> None:
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


def apply_window(x: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
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


def first_value(value) -> float:
    from pydicom.multival import MultiValue

    if isinstance(value, (MultiValue, list, tuple)):
        value = value[0]
    return float(value)


def stored_range(ds) -> tuple[float, float]:
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        return float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    return 0.0, float(2**bits - 1)


def rescale_of(ds) -> tuple[float, float]:
    try:
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
    except (TypeError, ValueError):
        slope, intercept = 1.0, 0.0
    return slope, intercept


def modality_range(ds, values: np.ndarray) -> tuple[float, float]:
    """The range of modality values the stored bits can encode (used to invert ``MONOCHROME1``)."""
    if "ModalityLUTSequence" in ds:
        return float(values.min()), float(values.max())
    slope, intercept = rescale_of(ds)
    lo, hi = stored_range(ds)
    lo, hi = sorted((lo * slope + intercept, hi * slope + intercept))
    return lo, hi


def voi_and_polarity(
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
                center = first_value(ds.WindowCenter)
                width = first_value(ds.WindowWidth)
            except (TypeError, ValueError, IndexError):
                center = width = float("nan")
            function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR")
            if not (np.isfinite(center) and np.isfinite(width)):
                logger.warning("%s: unreadable window center/width; window not applied", name)
            elif width >= 1 or (width > 0 and function.upper() != "LINEAR"):
                x = apply_window(x, center, width, function)
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
            lo, hi = value_range if value_range is not None else modality_range(ds, x)
            x = (lo + hi) - x
        meta["inverted"] = True
    return x


#: what a UID may hold (PS3.5 9.1: digits and dots, at most 64 characters); anything else is left out
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def dicom_uids(ds, instance: bool = True) -> dict[str, str]:
    """The study, series and (with ``instance``) SOP instance UIDs of a DICOM header, keyed as in
    :data:`~medclass.transforms.readers.base.DICOM_UID_KEYS`; a missing or malformed value is ``""``.

    These join a result back to PACS; no other element that identifies a patient is read."""
    out = {}
    for key, keyword in DICOM_UID_KEYS.items():
        value = str(ds.get(keyword, "") or "").strip() if (instance or key != "sop_instance_uid") else ""
        out[key] = value if len(value) <= 64 and _UID.fullmatch(value) else ""
    return out


def volume_meta(name: str, ds, dtype: np.dtype, shape: tuple[int, int, int], affine: np.ndarray,
                instance: bool = True) -> dict:
    """The metadata of a DICOM volume; ``instance=False`` (a series of files) leaves the SOP instance UID out."""
    meta = base_meta(name, "dicom")
    meta.update(dicom_uids(ds, instance))
    meta["photometric_interpretation"] = str(ds.get("PhotometricInterpretation", "") or "").upper()
    meta["modality"] = str(ds.get("Modality", "") or "")
    meta["original_dtype"] = np.dtype(dtype).newbyteorder("=").name
    meta["original_channels"] = int(ds.get("SamplesPerPixel", 1) or 1)
    meta["original_shape"] = tuple(int(s) for s in shape)
    meta["spacing"] = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
    return meta


def to_ijk(stack: np.ndarray) -> np.ndarray:
    """``(slices, rows, columns)`` -> channel-first ``(1, columns, rows, slices)`` ``float32``."""
    return np.ascontiguousarray(np.asarray(stack, dtype=np.float32).transpose(2, 1, 0)[None])


def functional_group_item(groups, seq: str):
    """The first item of functional group ``seq`` in a functional-groups item, or None."""
    if groups is None or seq not in groups:
        return None
    items = getattr(groups, seq, None)
    return items[0] if items is not None and len(items) > 0 else None


def decode_multiframe(ds, stored: np.ndarray, voi: bool, name: str) -> tuple[np.ndarray, dict, np.ndarray]:
    """A single-file multi-frame (e.g. Enhanced CT / MR) DICOM -> ``(1, columns, rows, frames)`` and RAS affine.

    Geometry comes from the per-frame / shared functional groups (Enhanced objects), or the top-level
    ``ImageOrientationPatient`` / ``ImagePositionPatient`` with ``GridFrameOffsetVector``; frames are
    sorted by position along the slice normal and checked like a series. Without any geometry the
    frames are taken in stored order as an axial stack (a warning says so).
    """
    from pydicom.pixels import apply_modality_lut

    frames, rows, cols = (int(s) for s in stored.shape[:3])
    shared = functional_group_item(ds, "SharedFunctionalGroupsSequence")
    per = ds.get("PerFrameFunctionalGroupsSequence", None)
    per = list(per) if per is not None and len(per) == frames else [None] * frames

    def group_value(f: int, seq: str, tag: str):
        for groups in (per[f], shared):
            item = functional_group_item(groups, seq)
            if item is not None and tag in item and item[tag].value not in (None, ""):
                return item[tag].value
        return ds.get(tag, None)

    # intensities: per-frame rescale from the functional groups, else the top-level modality LUT
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples > 1:
        values = luminance(stored)
        modality_out = values
        rescales = None
    elif any(
        functional_group_item(g, "PixelValueTransformationSequence") is not None for g in (per[0], shared)
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
    iops = [floats(group_value(f, "PlaneOrientationSequence", "ImageOrientationPatient") or [], 6)
            for f in range(frames)]
    ipps = [floats(group_value(f, "PlanePositionSequence", "ImagePositionPatient") or [], 3) for f in range(frames)]
    measures = (functional_group_item(shared, "PixelMeasuresSequence")
                or functional_group_item(per[0], "PixelMeasuresSequence"))
    row_col = pixel_spacing(measures) if measures is not None else None
    row_col = row_col or pixel_spacing(ds) or (1.0, 1.0)
    thickness = (slice_spacing(measures) if measures is not None else None) or slice_spacing(ds)
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
        r, c, n = directions(ref, name)
        positions = None
        if all(p is not None for p in ipps):
            positions = np.stack(ipps)
        elif ipps[0] is not None and "GridFrameOffsetVector" in ds:
            offsets = floats(ds.GridFrameOffsetVector, frames)
            if offsets is not None:
                positions = ipps[0][None] + offsets[:, None] * n[None]
        if positions is not None:
            order, step = sort_slices(positions, n, labels, name, min(row_col), what="frame")
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
    affine = lps_to_ras_affine(r, c, step, origin, row_col)
    meta = volume_meta(name, ds, stored.dtype, (cols, rows, frames), affine)
    if samples == 1:
        if rescales is not None:
            meta["rescaled"] = any(s != 1 or i != 0 for s, i in rescales)
            lo, hi = stored_range(ds)
            ends = [v for s, i in rescales for v in (lo * s + i, hi * s + i)]
            value_range = (min(ends), max(ends))
        else:
            slope, intercept = rescale_of(ds)
            meta["rescaled"] = bool("ModalityLUTSequence" in ds or slope != 1 or intercept != 0)
            value_range = modality_range(ds, values)
        values = voi_and_polarity(values, modality_out, ds, voi, name, meta, value_range)
    return to_ijk(values), meta, affine


class DicomReader(MedclassImageReader):
    """A DICOM file: a single-frame image (``spatial_dims=2``) or a multi-frame volume (``spatial_dims=3``);
    files without the preamble / ``DICM`` magic (old ACR-NEMA) too. A series given as a folder of slices is
    :class:`~medclass.transforms.readers.dicom_series.DicomSeriesReader`'s."""

    suffixes = DICOM_SUFFIXES

    def verify_suffix(self, filename: Any) -> bool:
        names = filename if isinstance(filename, (list, tuple)) else [filename]
        return super().verify_suffix(filename) or all(has_dicom_magic(Path(f)) for f in names)

    def read(self, data: Any, **kwargs: Any) -> Loaded:
        path = self.path_of(data)
        name = str(path)
        try:
            ds = dcmread(path)
            if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
                raise ValueError("no pixel data element")
            ensure_transfer_syntax(ds)
            int(ds.get("SamplesPerPixel", 1) or 1), int(ds.get("NumberOfFrames", 1) or 1)  # readable numbers
            int(ds.Rows), int(ds.Columns)
        except Exception as e:  # pydicom raises many types for corrupt / truncated / unsupported files
            raise ValueError(f"{name}: cannot read image ({type(e).__name__}: {e})") from e
        return Loaded(ds, name)

    def decode(self, img: Loaded) -> tuple[np.ndarray, dict[str, Any], np.ndarray | None]:
        from pydicom.pixels import apply_modality_lut

        ds, name = img
        spatial_dims, voi = self.spatial_dims, self.voi
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        rows, cols = int(ds.Rows), int(ds.Columns)

        # check the layout before decoding (a large multi-frame file is not decoded just to be rejected)
        shape = ((frames,) if frames > 1 else ()) + (rows, cols) + ((samples,) if samples > 1 else ())
        if frames > 1 and spatial_dims == 2:
            raise ValueError(
                f"{name}: multi-frame DICOM with {frames} frames (pixel array shape {shape}); expected {expected(2)}"
            )
        if frames == 1 and spatial_dims == 3:
            raise ValueError(
                f"{name}: single-frame DICOM of shape {shape} is a 2D image; expected {expected(3)} (a multi-frame "
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
            return decode_multiframe(ds, stored, voi, name)

        meta = base_meta(name, "dicom")
        meta.update(dicom_uids(ds))
        pi = str(ds.get("PhotometricInterpretation", "") or "").upper()
        meta["photometric_interpretation"] = pi
        meta["modality"] = str(ds.get("Modality", "") or "")
        meta["original_dtype"] = stored.dtype.newbyteorder("=").name
        meta["original_channels"] = samples
        meta["original_shape"] = (rows, cols)

        if samples > 1:
            # colour (RGB / YBR converted to RGB by pydicom): no modality / VOI LUT defined, use luminance
            x = luminance(stored)
        else:
            modality_out = np.asarray(apply_modality_lut(stored, ds))
            slope, intercept = rescale_of(ds)
            meta["rescaled"] = bool("ModalityLUTSequence" in ds or slope != 1 or intercept != 0)
            x = modality_out.astype(np.float64)
            x = voi_and_polarity(x, modality_out, ds, voi, name, meta)

        x, _, _ = array_to_channel_first(x, 2, name)
        return x, meta, dicom_plane(ds, name)


def read_dicom_file(path: Path, spatial_dims: int, voi: bool) -> tuple[np.ndarray, dict, np.ndarray | None]:
    """``(array, meta, affine)`` of one DICOM file as :class:`DicomReader` decodes it (before the shared last steps)."""
    reader = DicomReader(spatial_dims, voi)
    return reader.decode(reader.read(path))


def dicom_plane(ds, name: str) -> np.ndarray:
    """RAS affine of a single-frame DICOM's stored ``(rows, columns)`` grid (ITK's placement without IOP)."""
    row_col = pixel_spacing(ds) or (1.0, 1.0)
    r, c = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    iop = floats(ds.get("ImageOrientationPatient", None) or [], 6)
    if iop is not None:
        try:
            r, c, _ = directions(iop, name)
        except ValueError as e:
            logger.warning("%s; the stored pixel order is kept", e)
    ipp = floats(ds.get("ImagePositionPatient", None) or [], 3)
    return plane_affine(r, c, row_col, ipp if ipp is not None else np.zeros(3), slice_spacing(ds) or 1.0)

"""Image reading: DICOM, PIL formats (PNG, JPEG, TIFF, ...), NIfTI and in-memory arrays.

Every reader returns a single-channel, channel-first ``float32`` array and a metadata dict with one
fixed set of keys (see :data:`META_KEYS`), so that items from different sources collate into one
batch. 2D images come out as ``(1, H, W)`` with ``H`` the rows (top to bottom) and ``W`` the
columns (left to right), i.e. numpy / DICOM / PIL display order, *not* MONAI ``PILReader``'s
transposed order. 3D arrays come out as ``(1, D, H, W)`` in the order given; NIfTI and ITK volumes
keep their voxel-index order ``(1, I, J, K)`` with the voxel-to-world affine in the metadata.

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
#: File name endings read with MONAI ``LoadImage`` (ITK) as 3D volumes.
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")

#: The keys every metadata dict holds (same keys and types for every source, so batches collate).
META_KEYS = (
    "filename_or_obj",  # str: the path, or the item id / name for arrays
    "source_format",  # str: "dicom", "pil:<FORMAT>", "array", "npy", "nifti", "itk"
    "original_shape",  # tuple[int, ...]: spatial shape as stored ((H, W) or (D, H, W) / (I, J, K))
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


def _read_dicom(path: Path, spatial_dims: int, voi: bool, name: str) -> tuple[np.ndarray, dict]:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

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
        raise ValueError(f"{name}: single-frame DICOM of shape {shape} is a 2D image; expected {_expected(3)}")
    if samples not in (1, 3, 4):
        raise ValueError(f"{name}: unexpected channel count {samples} (SamplesPerPixel) in DICOM of shape {shape}")
    try:
        stored = ds.pixel_array
    except Exception as e:
        raise ValueError(f"{name}: cannot read image ({type(e).__name__}: {e})") from e

    meta = _base_meta(name, "dicom")
    pi = str(ds.get("PhotometricInterpretation", "") or "").upper()
    meta["photometric_interpretation"] = pi
    meta["modality"] = str(ds.get("Modality", "") or "")
    meta["original_dtype"] = stored.dtype.newbyteorder("=").name
    meta["original_channels"] = samples
    meta["original_shape"] = (frames, rows, cols) if frames > 1 else (rows, cols)

    if samples > 1:
        # colour (RGB / YBR converted to RGB by pydicom): no modality / VOI LUT defined, use luminance
        x = _luminance(stored)
    else:
        modality_out = np.asarray(apply_modality_lut(stored, ds))
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        meta["rescaled"] = bool("ModalityLUTSequence" in ds or slope != 1 or intercept != 0)
        x = modality_out.astype(np.float64)
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
        invert = pi == "MONOCHROME1" or str(ds.get("PresentationLUTShape", "") or "").upper() == "INVERSE"
        if invert:
            if meta["windowed"]:
                x = 1.0 - x
            else:
                lo, hi = _stored_range(ds)
                if "ModalityLUTSequence" in ds:
                    lo, hi = float(x.min()), float(x.max())
                else:
                    lo, hi = sorted((lo * slope + intercept, hi * slope + intercept))
                x = (lo + hi) - x
            meta["inverted"] = True

    if frames > 1:
        x, _, sp = _array_to_channel_first(x, 3, name)
    else:
        x, _, sp = _array_to_channel_first(x, 2, name)

    row_col = (1.0, 1.0)
    for tag in ("PixelSpacing", "ImagerPixelSpacing"):
        try:
            sp = [float(v) for v in (ds.get(tag, None) or [])]
        except (TypeError, ValueError):
            continue
        if len(sp) >= 2 and sp[0] > 0 and sp[1] > 0 and all(np.isfinite(sp[:2])):
            row_col = (sp[0], sp[1])
            break
    if spatial_dims == 3:
        try:
            thickness = float(ds.get("SpacingBetweenSlices", None) or ds.get("SliceThickness", None) or 1.0)
        except (TypeError, ValueError):
            thickness = 1.0
        meta["spacing"] = (thickness if thickness > 0 else 1.0, *row_col)
    else:
        meta["spacing"] = row_col
    return x, meta


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
    while data.ndim > spatial_dims and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != spatial_dims:
        raise ValueError(
            f"{name}: NIfTI image of shape {shape}; expected {spatial_dims} spatial dims ({_expected(spatial_dims)})"
        )
    meta = _base_meta(name, "nifti")
    meta["original_shape"] = tuple(int(s) for s in data.shape)
    meta["original_dtype"] = dtype
    meta["spacing"] = tuple(zooms[:spatial_dims]) + (1.0,) * max(0, spatial_dims - len(zooms))
    return data[None], meta, affine


def _read_itk(path: Path, spatial_dims: int, name: str) -> tuple[np.ndarray, dict, np.ndarray]:
    from monai.transforms import LoadImage

    if spatial_dims != 3:
        raise ValueError(f"{name}: volumes / DICOM series folders need spatial_dims=3, got {spatial_dims}")
    try:
        data, m = LoadImage(image_only=False, ensure_channel_first=False, reader="ITKReader")(str(path))
    except Exception as e:
        raise ValueError(f"{name}: cannot read image ({type(e).__name__}: {e})") from e
    arr = np.asarray(data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else data)
    shape = tuple(int(s) for s in arr.shape)
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise ValueError(f"{name}: volume of shape {shape}; expected {_expected(3)}")
    meta = _base_meta(name, "itk")
    meta["original_shape"] = tuple(int(s) for s in arr.shape)
    meta["original_dtype"] = str(arr.dtype)
    affine = np.asarray(m.get("affine", np.eye(4)), dtype=np.float64)
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
        src: a file path (DICOM, PNG / JPEG / TIFF / BMP / ... via PIL, NIfTI, ``.npy``, ITK formats,
            or a DICOM series folder for 3D), or an array: 2D ``(H, W)``, ``(H, W, 1|3|4)`` or
            ``(1, H, W)``; 3D ``(D, H, W)`` or ``(1, D, H, W)``. MedMNIST ``uint8`` arrays fit directly.
        spatial_dims: 2 for radiographs / slices, 3 for volumes.
        voi: for DICOM, apply the VOI LUT or the first Window Center / Width when present (values
            then in ``[0, 1]``); False keeps modality units (e.g. CT Hounsfield units).
        name: how to name an array source in metadata and error messages (e.g. the item id);
            ignored for paths.

    Returns:
        ``(array, meta)``: ``array`` is ``float32`` of shape ``(1, H, W)`` (2D) or ``(1, D, H, W)``
        (3D; NIfTI/ITK in voxel-index order ``(1, I, J, K)``), all values finite, in source units
        (see the module docstring). ``meta`` holds the keys of :data:`META_KEYS`, plus ``"affine"``
        (4x4 ``float64``) for NIfTI / ITK volumes.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: unreadable, truncated or unsupported file; wrong number of spatial dims for
            ``spatial_dims``; unexpected channel count; NaN/Inf pixels. The message names the file.
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
            out, meta, affine = _read_itk(path, spatial_dims, label)
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
        elif lname.endswith(DICOM_SUFFIXES) or _has_dicom_magic(path):
            out, meta = _read_dicom(path, spatial_dims, voi, label)
        else:
            res = _read_pil(path, spatial_dims, label)
            if res is None:
                # last resort: DICOM without extension, preamble or magic (old ACR-NEMA)
                try:
                    out, meta = _read_dicom(path, spatial_dims, voi, label)
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
    meta["spatial_shape"] = np.asarray(out.shape[1:], dtype=np.int64)
    if affine is not None:
        meta["affine"] = affine
    return out, meta


class ReadImage(Transform):
    """Read an image (path or array) into a ``(1, H, W[, D])`` ``float32`` :class:`monai.data.MetaTensor`.

    The array work is :func:`read_image`; the result's ``.meta`` holds :data:`META_KEYS` (with
    ``filename_or_obj`` the path, or ``name`` / ``"<array>"`` for arrays) and ``.affine`` is the
    NIfTI / ITK affine, or for 2D ``diag(row_spacing, col_spacing, 1, 1)``.

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

    Replaces ``data[key]`` (path or array) by the ``(1, H, W[, D])`` :class:`~monai.data.MetaTensor`;
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

"""What every medclass image reader shares: the metadata keys, array helpers, and :class:`MedclassImageReader`,
the base shaped like MONAI's ``ImageReader`` (``verify_suffix`` / ``read`` / ``get_data``) whose
:meth:`~MedclassImageReader.get_data` gives the single-channel, channel-first ``float32`` array and the metadata
every source shares (see :mod:`medclass.transforms.io` for the conventions).

A reader works on its own (``reader.get_data(reader.read(path))``), through :func:`medclass.transforms.read_image`
(which picks it), or in MONAI's ``LoadImage(reader=...)``.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
from monai.data import ImageReader

from medclass.transforms.orientation import plane_affine, to_display

__all__ = [
    "DICOM_UID_KEYS", "META_KEYS", "Loaded", "MedclassImageReader", "array_to_channel_first", "base_meta",
    "check_spatial_dims",
    "expected", "has_dicom_magic", "luminance", "to_float32",
]

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
    # str: the DICOM UIDs that join a result back to PACS ("" for other sources, and for a series' instance); no
    # other DICOM identifier (patient name / ID, dates, accession number) is ever read into the metadata
    "study_instance_uid",
    "series_instance_uid",
    "sop_instance_uid",
)

#: metadata key -> DICOM keyword of the only identifiers carried (image identifiers, never patient ones)
DICOM_UID_KEYS = {"study_instance_uid": "StudyInstanceUID", "series_instance_uid": "SeriesInstanceUID",
                  "sop_instance_uid": "SOPInstanceUID"}

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


def base_meta(name: str, source_format: str) -> dict[str, Any]:
    """A metadata dict with every key of :data:`META_KEYS` at its "unknown" value."""
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
        "study_instance_uid": "",
        "series_instance_uid": "",
        "sop_instance_uid": "",
    }


def luminance(arr: np.ndarray) -> np.ndarray:
    """``(..., 3 or 4)`` colour -> ``(...)`` luminance (float64); exact when all channels are equal."""
    rgb = arr[..., :3]
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return rgb[..., 0].astype(np.float64)
    return rgb.astype(np.float64) @ _LUMA


def to_float32(arr: np.ndarray, name: str) -> np.ndarray:
    """``arr`` as contiguous ``float32``; ``ValueError`` for an empty or non-finite image, ``TypeError`` for a
    non-numeric one."""
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


def check_spatial_dims(spatial_dims: int) -> int:
    """``spatial_dims`` when it is 2 or 3, else ``ValueError``."""
    if isinstance(spatial_dims, bool) or not isinstance(spatial_dims, (int, np.integer)) or spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    return int(spatial_dims)


def expected(spatial_dims: int) -> str:
    """What an image for ``spatial_dims`` looks like, for messages."""
    if spatial_dims == 2:
        return "a 2D image (H, W), (H, W, 3|4) or (1, H, W) for spatial_dims=2"
    return "a 3D volume (D, H, W) or (1, D, H, W) for spatial_dims=3"


def array_to_channel_first(arr: np.ndarray, spatial_dims: int, name: str) -> tuple[np.ndarray, int, tuple[int, ...]]:
    """Array in one of the accepted layouts -> ``(1, *spatial)`` luminance, channels, spatial shape."""
    shape = tuple(int(s) for s in arr.shape)
    if spatial_dims == 2:
        if arr.ndim == 2:
            return arr[None], 1, shape
        if arr.ndim == 3:
            if shape[-1] == 1:
                return arr[..., 0][None], 1, shape[:2]
            if shape[-1] in (3, 4):
                return luminance(arr)[None], shape[-1], shape[:2]
            if shape[0] == 1:
                return arr, 1, shape[1:]
            if shape[-1] == 2 or 4 < shape[-1] < min(shape[0], shape[1]):
                raise ValueError(
                    f"{name}: unexpected channel count {shape[-1]} in image of shape {shape}; "
                    f"expected 1, 3 (RGB) or 4 (RGBA) channels last: {expected(spatial_dims)}"
                )
            raise ValueError(
                f"{name}: got an array of shape {shape}, which looks like a 3D volume, but expected "
                f"{expected(spatial_dims)}"
            )
        raise ValueError(f"{name}: got an array of shape {shape} ({arr.ndim} dims), expected {expected(spatial_dims)}")
    if arr.ndim == 3:
        return arr[None], 1, shape
    if arr.ndim == 4 and shape[0] == 1:
        return arr, 1, shape[1:]
    if arr.ndim == 4 and shape[-1] == 1:
        return arr[..., 0][None], 1, shape[:3]
    if arr.ndim == 2 or (arr.ndim == 3 and shape[-1] in (3, 4)):
        raise ValueError(f"{name}: got a 2D image of shape {shape}, expected {expected(spatial_dims)}")
    raise ValueError(f"{name}: got an array of shape {shape} ({arr.ndim} dims), expected {expected(spatial_dims)}")


def has_dicom_magic(path: Path) -> bool:
    """Whether the file has the DICOM preamble and ``DICM`` magic."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


class Loaded(NamedTuple):
    """What a reader's :meth:`~MedclassImageReader.read` returns: the opened object and how messages name it."""

    obj: Any
    name: str


class MedclassImageReader(ImageReader):
    """Base of medclass's image readers, shaped like MONAI's ``ImageReader``.

    :meth:`read` opens a file (or takes an array) and :meth:`get_data` returns ``(array, meta)``: ``array``
    ``float32`` ``(1, H, W)`` (2D, display order) or ``(1, *spatial)`` (3D), all values finite; ``meta`` the keys
    of :data:`META_KEYS`, plus ``"affine"`` for 3D files. A subclass implements :meth:`read` and :meth:`decode`
    (the array as read, its metadata and the voxel-to-RAS affine of the stored grid, or ``None``).

    Args:
        spatial_dims: 2 or 3.
        voi: DICOM readers: apply the VOI LUT / window (see :func:`medclass.transforms.read_image`).
    """

    #: file name endings this reader takes (matched ignoring case)
    suffixes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, spatial_dims: int = 2, voi: bool = True) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.voi = bool(voi)

    def verify_suffix(self, filename: Any) -> bool:
        """Whether the file name(s) end in one of :attr:`suffixes`."""
        names = filename if isinstance(filename, (list, tuple)) else [filename]
        return bool(self.suffixes) and all(str(f).lower().endswith(self.suffixes) for f in names)

    @abstractmethod
    def read(self, data: Any, **kwargs: Any) -> Loaded:
        """Open ``data`` (a path; an array for the array reader).

        Raises:
            ValueError: unreadable, truncated or unsupported data (naming it).
        """

    @abstractmethod
    def decode(self, img: Loaded) -> tuple[np.ndarray, dict[str, Any], np.ndarray | None]:
        """``(array (1, *stored spatial), meta, affine of the stored grid or None)`` of what :meth:`read` opened."""

    def get_data(self, img: Loaded) -> tuple[np.ndarray, dict[str, Any]]:
        """The ``(array, meta)`` of what :meth:`read` opened (see the class docstring)."""
        out, meta, affine = self.decode(img)
        return self.finish(out, meta, affine, img.name)

    def finish(self, out: np.ndarray, meta: dict[str, Any], affine: np.ndarray | None,
               label: str) -> tuple[np.ndarray, dict[str, Any]]:
        """The shared last steps: ``float32``, finite values, a 3D volume more than one slice thick, 2D images in
        display order (:mod:`medclass.transforms.orientation`), the affines and spatial shape in ``meta``."""
        if out.dtype != np.float32 or not out.flags.c_contiguous:
            out = np.ascontiguousarray(out, dtype=np.float32)
        if not np.isfinite(out).all():
            n_bad = int(out.size - np.count_nonzero(np.isfinite(out)))
            raise ValueError(f"{label}: image has {n_bad} NaN/Inf pixel value(s) (shape {tuple(out.shape)})")
        if self.spatial_dims == 3 and 1 in out.shape[1:]:
            raise ValueError(
                f"{label}: volume of shape {tuple(out.shape[1:])} has a single slice along axis "
                f"{out.shape[1:].index(1)}: it is a 2D image; expected {expected(3)}"
            )
        if self.spatial_dims == 2:  # display order from the source's geometry (medclass.transforms.orientation)
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

    @staticmethod
    def path_of(data: Any) -> Path:
        """``data`` as a path (``~`` expanded); MONAI's ``LoadImage`` passes a tuple of one file name.

        Raises:
            ValueError: several files (a medclass reader reads one image; a DICOM series is its folder).
        """
        if isinstance(data, (list, tuple)):
            if len(data) != 1:
                raise ValueError(f"a medclass reader reads one file at a time, got {len(data)}: {list(data)[:3]}")
            data = data[0]
        return Path(data).expanduser()

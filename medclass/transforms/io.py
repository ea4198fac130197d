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

The metadata never carries patient identifiers (names, IDs, birth dates, accession numbers): of a DICOM header
only the Study, Series and SOP Instance UIDs are kept (``study_instance_uid``, ``series_instance_uid``,
``sop_instance_uid``; the last empty for a series of files), so that ``predictions.csv`` joins back to PACS.

The readers themselves, one module per source and each shaped like MONAI's ``ImageReader``, are in
:mod:`medclass.transforms.readers`; this module picks one (:func:`read_image`) and wraps it as MONAI transforms.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from medclass.transforms.readers import (
    ArrayReader,
    DicomReader,
    DicomSeriesReader,
    PILImageReader,
    UnrecognisedImage,
    reader_for,
)
from medclass.transforms.readers.base import META_KEYS, check_spatial_dims
from medclass.transforms.readers.dicom_geometry import (  # noqa: F401  (their names here before the readers split)
    ORIENTATION_ATOL,
    SLICE_GAP_FACTOR,
    SLICE_SPACING_ATOL,
    SLICE_SPACING_RTOL,
)
from medclass.vocab import DICOM_SUFFIXES, ITK_SUFFIXES, NIFTI_SUFFIXES  # noqa: F401  (their names here before)

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
    spatial_dims = check_spatial_dims(spatial_dims)
    if isinstance(src, (np.ndarray, torch.Tensor)):
        reader = ArrayReader(spatial_dims, name=name)
        return reader.get_data(reader.read(src))
    if not isinstance(src, (str, os.PathLike)):
        raise TypeError(
            f"image source must be a file path or a numpy array / torch tensor, got {type(src).__name__}"
        )
    path = Path(src).expanduser()
    label = str(path)
    if not path.exists():
        raise FileNotFoundError(f"{label}: image file not found")
    if path.is_dir():
        return _get(DicomSeriesReader(spatial_dims, voi), path)
    if path.stat().st_size == 0:
        raise ValueError(f"{label}: cannot read image (empty file)")
    reader = reader_for(path, spatial_dims, voi)
    if not isinstance(reader, PILImageReader):
        return _get(reader, path)
    try:
        loaded = reader.read(path)
    except UnrecognisedImage:  # last resort: DICOM without extension, preamble or magic (old ACR-NEMA)
        dicom = DicomReader(spatial_dims, voi)
        try:
            out, meta, affine = dicom.decode(dicom.read(path))
        except ValueError as e:
            raise ValueError(
                f"{label}: cannot read image (not a recognised image format: neither PIL nor pydicom could read it; "
                f"{e})"
            ) from e
        return dicom.finish(out, meta, affine, label)
    return reader.get_data(loaded)


def _get(reader, path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    return reader.get_data(reader.read(path))


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
        self.spatial_dims = check_spatial_dims(spatial_dims)
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

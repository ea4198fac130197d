"""Builders of small synthetic DICOM files for the reader tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "PID-0042-XYZ"


def make_dicom(
    path: Path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple[float, float] | None = None,
    voi_lut: np.ndarray | None = None,
    presentation_lut_shape: str | None = None,
    pixel_spacing: tuple[float, float] | None = None,
    modality: str = "CR",
    file_format: bool = True,
    orientation: tuple[float, ...] | None = None,
    position: tuple[float, float, float] | None = None,
    sop_class: str = SecondaryCaptureImageStorage,
) -> Path:
    """Write ``pixels`` as an uncompressed DICOM file.

    ``pixels``: ``(rows, cols)``, ``(frames, rows, cols)`` or ``(rows, cols, 3)`` (uint8 RGB);
    integer dtype (uint8 / uint16 / int16). ``file_format=False`` writes an ACR-NEMA style file
    with no preamble, no ``DICM`` magic and no file meta (implicit VR little endian).
    ``orientation`` / ``position``: ``ImageOrientationPatient`` / ``ImagePositionPatient`` (LPS), none by
    default (as most radiographs).
    """
    pixels = np.ascontiguousarray(pixels)
    ds = Dataset()
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = "19700101"
    ds.StudyDate = "20240102"
    ds.InstitutionName = "General Hospital"
    ds.Modality = modality
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    rgb = photometric == "RGB"
    if rgb:
        ds.Rows, ds.Columns = pixels.shape[:2]
        ds.SamplesPerPixel = 3
        ds.PlanarConfiguration = 0
    else:
        ds.Rows, ds.Columns = pixels.shape[-2:]
        ds.SamplesPerPixel = 1
        if pixels.ndim == 3:
            ds.NumberOfFrames = pixels.shape[0]
    ds.PhotometricInterpretation = photometric
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated = bits
    ds.BitsStored = bits_stored or bits
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if np.issubdtype(pixels.dtype, np.signedinteger) else 0
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_lut is not None:
        item = Dataset()
        item.add_new(0x00283002, "US", [len(voi_lut), 0, 16])  # LUTDescriptor: entries, first value, bits
        item.add_new(0x00283006, "US", [int(v) for v in voi_lut])  # LUTData
        ds.VOILUTSequence = [item]
    if presentation_lut_shape is not None:
        ds.PresentationLUTShape = presentation_lut_shape
    if pixel_spacing is not None:
        ds.PixelSpacing = list(pixel_spacing)
    if orientation is not None:
        ds.ImageOrientationPatient = [float(v) for v in orientation]
    if position is not None:
        ds.ImagePositionPatient = [float(v) for v in position]
    ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    if file_format:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.preamble = b"\0" * 128
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.preamble = None
        if hasattr(ds, "file_meta"):
            del ds.file_meta
        pydicom.dcmwrite(path, ds, enforce_file_format=False, implicit_vr=True, little_endian=True)
        raw = Path(path).read_bytes()
        # an old ACR-NEMA file starts straight with group 0008: no preamble, magic or group 0002
        if raw[128:132] == b"DICM" or raw[:2] == b"\x02\x00":
            raise RuntimeError("pydicom wrote a file meta / preamble; the ACR-NEMA test file is not what it claims")
    return Path(path)


AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _volume_dataset(rows: int, cols: int, modality: str, series_uid: str, pixel_spacing, dtype) -> Dataset:
    ds = Dataset()
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 3
    ds.SeriesDescription = "synthetic"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    bits = np.dtype(dtype).itemsize * 8
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if np.issubdtype(dtype, np.signedinteger) else 0
    ds.PixelSpacing = [float(v) for v in pixel_spacing]
    return ds


def _save(ds: Dataset, path: Path, sop_class: str) -> Path:
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.preamble = b"\0" * 128
    ds.save_as(path, enforce_file_format=True)
    return Path(path)


def make_series(
    folder: Path,
    volume: np.ndarray,
    positions: np.ndarray | None = None,
    orientation: tuple[float, ...] = AXIAL,
    pixel_spacing: tuple[float, float] = (0.8, 0.6),
    slice_spacing: float = 2.5,
    origin: tuple[float, float, float] = (-40.0, -30.0, 10.0),
    names: list[str] | None = None,
    instance_numbers: list[int] | None = None,
    series_uid: str | None = None,
    rescale: list[tuple[float, float]] | None = None,
    modality: str = "CT",
) -> list[Path]:
    """Write ``volume`` ``(slices, rows, cols)`` (int16 / uint16 stored values) as one DICOM file per slice.

    Slice ``k`` lies at ``positions[k]`` (``(3,)`` LPS mm), by default ``origin + k * slice_spacing *
    normal``. ``names`` / ``instance_numbers`` default to ``slice_###.dcm`` / ``k + 1`` (pass shuffled
    ones to test sorting); ``rescale`` gives each slice its own ``(slope, intercept)``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    volume = np.ascontiguousarray(volume)
    n, rows, cols = volume.shape
    iop = np.asarray(orientation, dtype=np.float64)
    normal = np.cross(iop[:3], iop[3:])
    if positions is None:
        positions = np.asarray(origin)[None] + np.arange(n)[:, None] * slice_spacing * normal[None]
    names = names or [f"slice_{k:03d}.dcm" for k in range(n)]
    numbers = instance_numbers or list(range(1, n + 1))
    series_uid = series_uid or generate_uid()
    paths = []
    for k in range(n):
        ds = _volume_dataset(rows, cols, modality, series_uid, pixel_spacing, volume.dtype)
        ds.ImageOrientationPatient = [float(v) for v in iop]
        ds.ImagePositionPatient = [float(v) for v in positions[k]]
        ds.SliceThickness = slice_spacing
        ds.InstanceNumber = numbers[k]
        if rescale is not None:
            ds.RescaleSlope, ds.RescaleIntercept = rescale[k]
        ds.PixelData = volume[k].astype(volume.dtype.newbyteorder("<")).tobytes()
        paths.append(_save(ds, folder / names[k], "1.2.840.10008.5.1.4.1.1.2"))  # CT Image Storage
    return paths


def make_enhanced_multiframe(
    path: Path,
    volume: np.ndarray,
    positions: np.ndarray,
    orientation: tuple[float, ...] = AXIAL,
    pixel_spacing: tuple[float, float] = (0.8, 0.6),
    rescale: list[tuple[float, float]] | None = None,
    modality: str = "CT",
) -> Path:
    """Write ``volume`` ``(frames, rows, cols)`` as an Enhanced CT style multi-frame file.

    Geometry and rescale live in the functional groups: orientation and pixel measures shared, one
    ``PlanePositionSequence`` (``positions[f]``) and ``PixelValueTransformationSequence`` per frame.
    """
    volume = np.ascontiguousarray(volume)
    n, rows, cols = volume.shape
    ds = _volume_dataset(rows, cols, modality, generate_uid(), pixel_spacing, volume.dtype)
    del ds.PixelSpacing  # only in the functional groups
    ds.NumberOfFrames = n
    shared = Dataset()
    orient = Dataset()
    orient.ImageOrientationPatient = [float(v) for v in orientation]
    shared.PlaneOrientationSequence = [orient]
    measures = Dataset()
    measures.PixelSpacing = [float(v) for v in pixel_spacing]
    measures.SliceThickness = 1.0
    shared.PixelMeasuresSequence = [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    per = []
    for f in range(n):
        item = Dataset()
        pos = Dataset()
        pos.ImagePositionPatient = [float(v) for v in positions[f]]
        item.PlanePositionSequence = [pos]
        if rescale is not None:
            pvt = Dataset()
            pvt.RescaleSlope, pvt.RescaleIntercept = rescale[f]
            pvt.RescaleType = "HU"
            item.PixelValueTransformationSequence = [pvt]
        per.append(item)
    ds.PerFrameFunctionalGroupsSequence = per
    ds.PixelData = volume.astype(volume.dtype.newbyteorder("<")).tobytes()
    return _save(ds, path, "1.2.840.10008.5.1.4.1.1.2.1")  # Enhanced CT Image Storage


def lps_voxel_to_world(
    ipp: np.ndarray, orientation: tuple[float, ...], pixel_spacing: tuple[float, float], i: float, j: float
) -> np.ndarray:
    """DICOM PS3.3 C.7.6.2.1.1: LPS position of column ``i``, row ``j`` of a slice at ``ipp``."""
    iop = np.asarray(orientation, dtype=np.float64)
    return np.asarray(ipp) + i * pixel_spacing[1] * iop[:3] + j * pixel_spacing[0] * iop[3:]

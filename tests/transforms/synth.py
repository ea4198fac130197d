"""Builders of small synthetic DICOM files for the reader tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

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
) -> Path:
    """Write ``pixels`` as an uncompressed DICOM file.

    ``pixels``: ``(rows, cols)``, ``(frames, rows, cols)`` or ``(rows, cols, 3)`` (uint8 RGB);
    integer dtype (uint8 / uint16 / int16). ``file_format=False`` writes an ACR-NEMA style file
    with no preamble, no ``DICM`` magic and no file meta (implicit VR little endian).
    """
    pixels = np.ascontiguousarray(pixels)
    ds = Dataset()
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = "19700101"
    ds.StudyDate = "20240102"
    ds.InstitutionName = "General Hospital"
    ds.Modality = modality
    ds.SOPClassUID = SecondaryCaptureImageStorage
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

"""Image readers, one module per kind of source, each shaped like MONAI's ``ImageReader`` (``verify_suffix`` /
``read`` / ``get_data``, :class:`MedclassImageReader`) and each giving the same single-channel, channel-first
``float32`` array and metadata keys (:data:`META_KEYS`):

=====================================  ==========================================================================
reader                                 module
=====================================  ==========================================================================
:class:`DicomReader`                   :mod:`~medclass.transforms.readers.dicom` (files: 2D, multi-frame 3D)
:class:`DicomSeriesReader`             :mod:`~medclass.transforms.readers.dicom_series` (a folder of slices)
:class:`NiftiReader`, :class:`ItkReader`  :mod:`~medclass.transforms.readers.nifti`
:class:`PILImageReader`, :class:`ArrayReader`, :class:`NpyReader`  :mod:`~medclass.transforms.readers.image2d`
=====================================  ==========================================================================

:func:`medclass.transforms.read_image` picks one (:func:`reader_for`).
"""

from __future__ import annotations

import os
from pathlib import Path

from medclass.transforms.readers.base import META_KEYS, Loaded, MedclassImageReader
from medclass.transforms.readers.dicom import DicomReader
from medclass.transforms.readers.dicom_series import DicomSeriesReader
from medclass.transforms.readers.image2d import ArrayReader, NpyReader, PILImageReader, UnrecognisedImage
from medclass.transforms.readers.nifti import ItkReader, NiftiReader

__all__ = [
    "META_KEYS", "ArrayReader", "DicomReader", "DicomSeriesReader", "ItkReader", "Loaded", "MedclassImageReader",
    "NiftiReader", "NpyReader", "PILImageReader", "UnrecognisedImage", "reader_for",
]


def reader_for(path: str | os.PathLike, spatial_dims: int = 2, voi: bool = True) -> MedclassImageReader:
    """The reader of an existing path: a folder is a DICOM series; files by their name ending (NIfTI, ITK,
    ``.npy``, DICOM) or the ``DICM`` magic; anything else goes to PIL (and, when PIL does not know the format, to
    DICOM as an old ACR-NEMA file: :func:`medclass.transforms.read_image` does that)."""
    path = Path(path)
    if path.is_dir():
        return DicomSeriesReader(spatial_dims, voi)
    for reader in (NiftiReader(spatial_dims), ItkReader(spatial_dims), NpyReader(spatial_dims),
                   DicomReader(spatial_dims, voi)):
        if reader.verify_suffix(path):
            return reader
    return PILImageReader(spatial_dims)

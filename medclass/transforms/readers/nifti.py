"""Volume (and 2D slice) files with a voxel-to-world affine: NIfTI through nibabel (:class:`NiftiReader`), NRRD /
MetaImage through ITK (:class:`ItkReader`, MONAI's ``ITKReader``). 3D: voxel-index order ``(1, I, J, K)`` and the
RAS affine as MONAI keeps it; 2D: the slice's plane (:func:`medclass.transforms.orientation.plane_of`), so a file
written from a DICOM reads as the DICOM does."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from medclass.transforms.orientation import plane_of
from medclass.transforms.readers.base import Loaded, MedclassImageReader, base_meta, expected
from medclass.vocab import ITK_SUFFIXES, NIFTI_SUFFIXES

__all__ = ["ItkReader", "NiftiReader"]


class NiftiReader(MedclassImageReader):
    """A NIfTI file (``.nii``, ``.nii.gz``) through nibabel."""

    suffixes = NIFTI_SUFFIXES

    def read(self, data: Any, **kwargs: Any) -> Loaded:
        """The voxels (``float32``), affine, voxel sizes and stored dtype."""
        import nibabel as nib

        path = self.path_of(data)
        name = str(path)
        try:
            img = nib.load(str(path))
            data = np.asarray(img.dataobj, dtype=np.float32)
            affine = np.asarray(img.affine, dtype=np.float64)
            zooms = tuple(float(z) for z in img.header.get_zooms())
            dtype = str(img.get_data_dtype())
        except Exception as e:
            raise ValueError(f"{name}: cannot read image ({type(e).__name__}: {e})") from e
        return Loaded((data, affine, zooms, dtype), name)

    def decode(self, img: Loaded) -> tuple[np.ndarray, dict[str, Any], np.ndarray | None]:
        (data, affine, zooms, dtype), name = img
        shape = tuple(int(s) for s in data.shape)
        if self.spatial_dims == 2:
            data, affine = plane_of(data, affine, name, "NIfTI")  # spacing: from the display affine (read_image)
        while data.ndim > self.spatial_dims and data.shape[-1] == 1:
            data = data[..., 0]
        if data.ndim != self.spatial_dims:
            if data.ndim > self.spatial_dims:
                what = f"a {data.ndim}D image (e.g. a time series, diffusion directions or several volumes)"
            else:
                what = f"a {data.ndim}D image"
            raise ValueError(
                f"{name}: NIfTI image of shape {shape} is {what}; expected {self.spatial_dims} spatial dims "
                f"({expected(self.spatial_dims)})"
            )
        meta = base_meta(name, "nifti")
        meta["original_shape"] = tuple(int(s) for s in data.shape)
        meta["original_dtype"] = dtype
        meta["spacing"] = tuple(zooms[:self.spatial_dims]) + (1.0,) * max(0, self.spatial_dims - len(zooms))
        return data[None], meta, affine


class ItkReader(MedclassImageReader):
    """An ITK image file (``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``) through MONAI's ``ITKReader``."""

    suffixes = ITK_SUFFIXES

    def read(self, data: Any, **kwargs: Any) -> Loaded:
        """MONAI ``LoadImage``'s ``(data, meta)``."""
        from monai.transforms import LoadImage

        path = self.path_of(data)
        name = str(path)
        try:
            loaded = LoadImage(image_only=False, ensure_channel_first=False, reader="ITKReader")(str(path))
        except Exception as e:
            raise ValueError(f"{name}: cannot read image ({type(e).__name__}: {e})") from e
        return Loaded(loaded, name)

    def decode(self, img: Loaded) -> tuple[np.ndarray, dict[str, Any], np.ndarray | None]:
        (data, m), name = img
        arr = np.asarray(data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else data)
        shape = tuple(int(s) for s in arr.shape)
        affine = np.asarray(m.get("affine", np.eye(arr.ndim + 1)), dtype=np.float64)
        if self.spatial_dims == 2:
            arr, affine = plane_of(arr, affine, name, "ITK")  # spacing: from the display affine (read_image)
        else:
            while arr.ndim > 3 and arr.shape[-1] == 1:
                arr = arr[..., 0]
            if arr.ndim != 3:
                raise ValueError(f"{name}: volume of shape {shape}; expected {expected(3)}")
        meta = base_meta(name, "itk")
        meta["original_shape"] = tuple(int(s) for s in arr.shape)
        meta["original_dtype"] = str(arr.dtype)
        meta["spacing"] = tuple(float(s) for s in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
        meta["modality"] = str(m.get("0008|0060", "") or "").strip()
        return arr[None], meta, affine

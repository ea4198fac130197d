"""2D images and arrays: PNG / JPEG / TIFF / BMP / ... through PIL (:class:`PILImageReader`), numpy arrays and
torch tensors (:class:`ArrayReader`, e.g. MedMNIST) and ``.npy`` files (:class:`NpyReader`).

PIL values are kept as stored (8-bit, 16-bit, integer, float; no rescaling), colour is converted to luminance
(ITU-R 601) and alpha dropped; the stored pixel order is the display order (*not* MONAI ``PILReader``'s
transposed order). Arrays keep their values; ``(H, W, 3|4)`` becomes luminance too.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from medclass.transforms.readers.base import (
    Loaded,
    MedclassImageReader,
    array_to_channel_first,
    base_meta,
    expected,
    luminance,
    to_float32,
)
from medclass.vocab import PIL_SUFFIXES

logger = logging.getLogger(__name__)

__all__ = ["ArrayReader", "NpyReader", "PILImageReader", "UnrecognisedImage"]


class UnrecognisedImage(ValueError):
    """PIL does not know the file's format (:func:`medclass.transforms.read_image` then tries DICOM)."""


class PILImageReader(MedclassImageReader):
    """A 2D image file PIL opens (one frame / page); EXIF orientation applied."""

    suffixes = PIL_SUFFIXES

    def read(self, data: Any, **kwargs: Any) -> Loaded:
        """The opened PIL image.

        Raises:
            UnrecognisedImage: PIL does not recognise the format.
            ValueError: PIL cannot open the file.
        """
        from PIL import Image, UnidentifiedImageError

        path = self.path_of(data)
        name = str(path)
        try:
            return Loaded(Image.open(path), name)
        except UnidentifiedImageError as e:
            raise UnrecognisedImage(f"{name}: not an image format PIL knows ({e})") from e
        except Exception as e:
            raise ValueError(f"{name}: cannot read image ({type(e).__name__}: {e})") from e

    def decode(self, img: Loaded) -> tuple[np.ndarray, dict[str, Any], np.ndarray | None]:
        from PIL import ImageOps

        im, name = img
        with im:
            fmt = str(im.format or "unknown")
            n_frames = int(getattr(im, "n_frames", 1) or 1)
            if n_frames > 1:
                raise ValueError(
                    f"{name}: {fmt} file with {n_frames} frames/pages of size {im.size[1]}x{im.size[0]}; "
                    f"expected a single 2D image"
                )
            if self.spatial_dims == 3:
                raise ValueError(
                    f"{name}: {fmt} image of shape ({im.size[1]}, {im.size[0]}) is a 2D image; expected {expected(3)}"
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
                    arr = luminance(np.asarray(im2))
                elif mode in ("P", "PA"):
                    arr = luminance(np.asarray(im2.convert("RGBA")))
                elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                    arr = luminance(np.asarray(im2.convert("RGB")))
                else:
                    arr = np.asarray(im2.convert("F"))
            except ValueError:
                raise
            except Exception as e:  # truncated / corrupt data surface at load time as OSError, SyntaxError, ...
                raise ValueError(f"{name}: cannot read image ({type(e).__name__}: {e})") from e
        if arr.ndim != 2:
            raise ValueError(
                f"{name}: unexpected {fmt} pixel array of shape {arr.shape} (mode {mode}); expected (H, W)")
        meta = base_meta(name, f"pil:{fmt}")
        meta["original_shape"] = tuple(int(s) for s in arr.shape)
        meta["original_channels"] = int(channels)
        meta["original_dtype"] = {"1": "bool", "F": "float32", "I": "int32"}.get(
            mode, "uint16" if mode.startswith("I;16") else "uint8"
        )
        meta["spacing"] = (1.0, 1.0)
        return arr[None], meta, None


class ArrayReader(MedclassImageReader):
    """A numpy array or torch tensor: 2D ``(H, W)``, ``(H, W, 1|3|4)`` or ``(1, H, W)``; 3D ``(D, H, W)`` or
    ``(1, D, H, W)`` (MedMNIST ``uint8`` arrays fit directly), in the order given, identity geometry.

    Args:
        spatial_dims: 2 or 3.
        name: how metadata and errors name the array (e.g. the item id; default ``"<array>"``).
    """

    def __init__(self, spatial_dims: int = 2, name: str | None = None) -> None:
        super().__init__(spatial_dims)
        self.name = str(name) if name is not None else "<array>"

    def verify_suffix(self, filename: Any) -> bool:
        return isinstance(filename, (np.ndarray, torch.Tensor))

    def read(self, data: Any, **kwargs: Any) -> Loaded:
        arr = data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else data
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"{self.name}: expected a numpy array or torch tensor, got {type(data).__name__}")
        return Loaded(arr, self.name)

    def decode(self, img: Loaded) -> tuple[np.ndarray, dict[str, Any], np.ndarray | None]:
        arr, label = img
        if arr.dtype.byteorder not in "=|":
            arr = arr.astype(arr.dtype.newbyteorder("="))
        arr32 = to_float32(arr, label)
        out, channels, sp = array_to_channel_first(arr32, self.spatial_dims, label)
        meta = base_meta(label, "array")
        meta.update(original_shape=sp, original_channels=channels, original_dtype=str(arr.dtype))
        meta["spacing"] = (1.0,) * self.spatial_dims
        return out, meta, None


class NpyReader(ArrayReader):
    """A ``.npy`` file holding an array as :class:`ArrayReader` takes it (``source_format`` ``"npy"``)."""

    suffixes = (".npy",)

    def __init__(self, spatial_dims: int = 2) -> None:
        super().__init__(spatial_dims)

    def verify_suffix(self, filename: Any) -> bool:
        return MedclassImageReader.verify_suffix(self, filename)

    def read(self, data: Any, **kwargs: Any) -> Loaded:
        path = self.path_of(data)
        try:
            return Loaded(np.load(path, allow_pickle=False), str(path))
        except Exception as e:
            raise ValueError(f"{path}: cannot read image ({type(e).__name__}: {e})") from e

    def decode(self, img: Loaded) -> tuple[np.ndarray, dict[str, Any], np.ndarray | None]:
        out, meta, affine = super().decode(img)
        meta["source_format"] = "npy"
        return out, meta, affine

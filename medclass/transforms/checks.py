"""A check after reading: an image that is empty, blank (one value everywhere) or non-finite stops the run with an
error naming the file, instead of going through silently (``skip_unreadable: true`` leaves such images out
before the run, see :func:`medclass.data.screen_items`)."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform

from medclass.errors import UnreadableImageError

__all__ = ["RequireContentd", "check_image_content"]


def check_image_content(image: Any, name: str) -> None:
    """Raise :class:`UnreadableImageError` naming ``name`` when the image is empty, constant or non-finite."""
    arr = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image)
    if arr.size == 0:
        raise UnreadableImageError(f"{name}: empty image (shape {tuple(arr.shape)})")
    finite = np.isfinite(arr)
    if not finite.all():
        raise UnreadableImageError(f"{name}: {int((~finite).sum())} NaN/Inf pixel value(s)")
    lo, hi = float(arr.min()), float(arr.max())
    if lo == hi:
        raise UnreadableImageError(
            f"{name}: blank image (every pixel is {lo:g}); remove it from the data, or set skip_unreadable: true "
            "to leave such images out")


class RequireContentd(MapTransform):
    """Raise :class:`medclass.errors.UnreadableImageError` naming the file when an image has no content.

    Args:
        keys: image keys (already read, e.g. by :class:`medclass.transforms.ReadImaged`).
        allow_missing_keys: do not raise when a key is absent.
    """

    def __init__(self, keys: KeysCollection = ("image",), allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> Mapping[Hashable, Any]:
        for key in self.key_iterator(data):
            img = data[key]
            meta = getattr(img, "meta", {}) or {}
            name = meta.get("filename_or_obj") or data.get("id") or key
            check_image_content(img, os.fspath(name) if isinstance(name, os.PathLike) else str(name))
        return data

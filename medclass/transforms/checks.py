"""A check after reading: an image that is empty, blank (one value everywhere) or non-finite stops the run with an
error naming the file, instead of going through silently (``skip_unreadable: true`` leaves such images out
before the run, see :func:`medclass.data.screen_items`)."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any

from monai.config import KeysCollection
from monai.transforms import MapTransform

from medclass.data.skipped import check_image_content

__all__ = ["RequireContentd"]


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

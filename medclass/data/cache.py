"""Caching preprocessed images compactly, and choosing where to cache them.

A preprocessed 224 px grey image is a float32 ``MetaTensor`` of 0.19 MB; kept by MONAI's ``CacheDataset`` with
its metadata and tracked operations it costs about 0.38 MB of resident memory (measured), so the 112,120 images
of ChestX-ray14 need over 40 GB. Here each cached image is *packed*: its pixels as ``uint8`` (an affine
quantisation over the image's own value range: 256 levels between its minimum and maximum, the error at most
half a level) or ``float16``, plus its affine; everything else of the item (labels, id) is kept as it is. Items
are unpacked to float32 ``MetaTensor`` s when read, before any augmentation. The same packed form is what the
disk cache writes.

``cache: auto`` (:func:`choose_cache`) estimates the cache from the number of items and the packed size of the
first one, and takes memory when it fits the memory budget, else disk when it fits the free disk space, else
none; the choice and the estimate are logged.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = ["CACHES", "CACHE_DTYPES", "pack", "unpack", "pack_item", "unpack_item", "packed_nbytes",
           "CompactCacheDataset", "CompactPersistentDataset", "choose_cache", "cache_dtype_for", "parse_bytes",
           "resolve_cache", "available_memory", "release_free_memory"]

CACHES = ("auto", "memory", "disk", "none")
CACHE_DTYPES = ("auto", "uint8", "float16", "float32")
_PACKED = "__medclass_packed__"
#: bytes a packed item costs beyond its pixels (the dicts, the affine, the label tensor, the id): measured ~2 kB
ITEM_OVERHEAD = 4096


def cache_dtype_for(cache_dtype: str, spatial_dims: int) -> str:
    """The storage type ``auto`` stands for: ``uint8`` for 2D images (8 bits, as radiographs are displayed;
    0.05 MB at 224 px), ``float16`` for 3D volumes (11 bits of precision over the volume's range)."""
    cache_dtype = str(cache_dtype).lower()
    if cache_dtype not in CACHE_DTYPES:
        raise ValueError(f"cache_dtype must be one of {CACHE_DTYPES}, got {cache_dtype!r}")
    if cache_dtype == "auto":
        return "uint8" if int(spatial_dims) == 2 else "float16"
    return cache_dtype


def pack(image: Any, dtype: str) -> dict[str, Any]:
    """A preprocessed image ``(C, *spatial)`` in compact form (see the module docstring).

    Args:
        image: float tensor / array / MetaTensor.
        dtype: ``uint8``, ``float16`` or ``float32``.
    """
    affine = getattr(image, "affine", None)
    plain = getattr(image, "as_tensor", None)  # MetaTensor -> Tensor: its ops track metadata
    t = plain() if callable(plain) else torch.as_tensor(image)
    # numpy, one thread: torch's threaded kernels on images this small cost more in synchronisation than work
    x = t.detach().cpu().numpy().astype(np.float32, copy=False)
    packed: dict[str, Any] = {_PACKED: dtype,
                              "affine": None if affine is None else torch.as_tensor(affine).detach().clone()}
    if dtype == "uint8":
        low, high = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
        scale = (high - low) / 255.0 if high > low else 1.0
        q = np.clip(np.rint((x - low) / scale), 0, 255).astype(np.uint8)
        packed.update(data=torch.from_numpy(q), low=low, scale=scale)
    elif dtype in ("float16", "float32"):
        packed["data"] = torch.from_numpy(x.astype(dtype, copy=True))
    else:
        raise ValueError(f"cannot pack an image as {dtype!r}; use one of {CACHE_DTYPES[1:]}")
    return packed


def unpack(packed: Mapping[str, Any]) -> torch.Tensor:
    """The float32 image of :func:`pack` (a ``MetaTensor`` with the stored affine)."""
    from monai.data import MetaTensor

    data = packed["data"].numpy()
    x = data.astype(np.float32)
    if packed[_PACKED] == "uint8":
        x *= np.float32(packed["scale"])
        x += np.float32(packed["low"])
    x = torch.from_numpy(x)
    return MetaTensor(x, affine=packed["affine"]) if packed.get("affine") is not None else MetaTensor(x)


def _is_packed(value: Any) -> bool:
    return isinstance(value, Mapping) and _PACKED in value


def pack_item(item: Mapping[str, Any], dtype: str, keys: Sequence[str] = ("image",)) -> dict[str, Any]:
    """``item`` with each of ``keys`` packed; other values kept."""
    out = dict(item)
    for key in keys:
        if key in out and not _is_packed(out[key]):
            out[key] = pack(out[key], dtype)
    return out


def unpack_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """``item`` with every packed value unpacked (a new dict: the cached item is never changed)."""
    return {k: unpack(v) if _is_packed(v) else v for k, v in item.items()}


def packed_nbytes(item: Mapping[str, Any]) -> int:
    """Bytes of a packed item's pixel tensors plus :data:`ITEM_OVERHEAD`."""
    n = ITEM_OVERHEAD
    for value in item.values():
        if _is_packed(value):
            n += value["data"].numel() * value["data"].element_size()
        elif isinstance(value, torch.Tensor):
            n += value.numel() * value.element_size()
    return n


def release_free_memory() -> None:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim``; a no-op elsewhere).

    Preprocessing an image allocates and frees float buffers several times its packed size; without this the
    resident memory of a filled cache stays at about three times the packed items (measured: 0.155 against
    0.061 MB per 224 px item).
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError, TypeError):  # not glibc
        pass


def _first_random(transform) -> int | None:
    from monai.transforms import RandomizableTrait, Transform

    return transform.get_index_of_first(lambda t: isinstance(t, RandomizableTrait) or not isinstance(t, Transform))


def _cache_class(base):
    class Compact(base):
        """MONAI's ``CacheDataset`` keeping each item packed (:func:`pack_item`) and unpacking it when read."""

        def __init__(self, *args: Any, cache_dtype: str = "uint8", **kwargs: Any) -> None:
            self.cache_dtype = cache_dtype
            self._loaded = 0
            super().__init__(*args, **kwargs)  # fills the cache
            release_free_memory()

        def _load_cache_item(self, idx: int):
            item = pack_item(super()._load_cache_item(idx), self.cache_dtype)
            self._loaded += 1
            if self._loaded % 256 == 0:  # keep the filling's peak near the packed size too
                release_free_memory()
            return item

        def _transform(self, index: int):
            if self.hash_as_key or not index % len(self) < self.cache_num:
                return super()._transform(index)  # items beyond cache_rate: the whole chain, nothing packed
            if self._cache[index] is None:  # runtime cache
                self._cache[index] = self._load_cache_item(index)
            data = unpack_item(self._cache[index])  # a fresh float item: the augmentation never changes the cache
            start = _first_random(self.transform)
            return data if start is None else self.transform(data, start=start)

    return Compact


def _persistent_class(base):
    class CompactPersistent(base):
        """MONAI's ``PersistentDataset`` writing packed items (:func:`pack_item`) and unpacking them when read.
        The transform is part of every file's key (``hash_transform``), so another preset or image size never
        reads stale items."""

        def __init__(self, *args: Any, cache_dtype: str = "uint8", **kwargs: Any) -> None:
            from monai.data.utils import pickle_hashing

            self.cache_dtype = cache_dtype
            kwargs.setdefault("hash_transform", pickle_hashing)
            super().__init__(*args, **kwargs)

        def _pre_transform(self, item_transformed):
            return pack_item(super()._pre_transform(item_transformed), self.cache_dtype)

        def _post_transform(self, item_transformed):
            return super()._post_transform(unpack_item(item_transformed))

    return CompactPersistent


def _classes():
    from monai.data import CacheDataset, PersistentDataset

    return _cache_class(CacheDataset), _persistent_class(PersistentDataset)


CompactCacheDataset, CompactPersistentDataset = _classes()


def parse_bytes(value: Any) -> int | None:
    """``"8GB"``, ``"512 MB"``, ``2e9`` or ``None`` -> bytes (``None`` stays ``None``)."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    text = str(value).strip().upper().replace(" ", "").rstrip("B").rstrip("I")
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(float(text))
    except ValueError:
        raise ValueError(f"memory_budget must be a size such as 8GB or 512MB, got {value!r}") from None


def available_memory() -> int:
    """Bytes of memory available to this process now (psutil's ``available``; the cgroup limit where lower)."""
    import psutil

    avail = int(psutil.virtual_memory().available)
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            avail = min(avail, int(text))
    return avail


def choose_cache(n_items: int, item_bytes: int, memory_budget: int | None = None, cache_dir: str | os.PathLike |
                 None = None, memory_share: float = 0.5) -> tuple[str, str]:
    """Where to cache ``n_items`` items of ``item_bytes`` each: ``memory``, ``disk`` or ``none``, and why.

    Args:
        n_items: items to cache.
        item_bytes: the packed size of one item (:func:`packed_nbytes` of the first).
        memory_budget: bytes the memory cache may use; ``None``: ``memory_share`` of the memory available now
            (the rest is left to the network, the optimizer and the loader), divided among the processes torchrun
            started on this machine (``LOCAL_WORLD_SIZE``), each of which caches every item.
        cache_dir: the disk cache's folder (its file system's free space decides ``disk``).
        memory_share: see ``memory_budget``.

    Returns:
        ``(choice, reason)``, the reason giving the estimate and the budget in GB.
    """
    need = int(n_items) * int(item_bytes)
    # torchrun's processes on this machine each hold their own memory cache: they share the budget
    per_node = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    budget = int(memory_budget) if memory_budget is not None else int(available_memory() * memory_share / per_node)
    gb = 2**30
    what = f"{n_items} items x {item_bytes / 2**20:.3f} MB = {need / gb:.2f} GB"
    if need <= budget:
        return "memory", f"{what} fits the memory budget of {budget / gb:.2f} GB"
    if cache_dir is not None:
        folder = Path(cache_dir)
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        free = shutil.disk_usage(folder).free
        if need <= 0.8 * free:
            return "disk", (f"{what} exceeds the memory budget of {budget / gb:.2f} GB; the disk under {folder} has "
                            f"{free / gb:.1f} GB free")
        return "none", (f"{what} exceeds the memory budget of {budget / gb:.2f} GB and 80% of the {free / gb:.1f} GB "
                        f"free under {folder}: every epoch decodes the images again")
    return "none", f"{what} exceeds the memory budget of {budget / gb:.2f} GB and there is no cache_dir"


def resolve_cache(cache: str, items: Sequence[Mapping[str, Any]], transform, cache_dir: str | os.PathLike | None = None,
                  cache_rate: float = 1.0, cache_dtype: str = "auto", spatial_dims: int = 2,
                  memory_budget: Any = None) -> str:
    """The cache a run uses: ``cache`` itself, or for ``auto`` the choice of :func:`choose_cache` for ``items``.

    The packed size of the first item (preprocessed once here) times the items to cache is the estimate. The
    choice and the estimate are logged; an explicit ``memory`` cache whose estimate exceeds the budget is kept
    but warned about before training starts.

    Args:
        cache: ``auto``, ``memory``, ``disk`` or ``none``.
        items: every item the run caches (training and validation).
        transform: the item transform (a ``Compose``; its deterministic head is what is cached).
        cache_dir: the disk cache's folder.
        cache_rate: share of items kept in the memory cache.
        cache_dtype: storage type (:func:`cache_dtype_for`).
        spatial_dims: 2 or 3.
        memory_budget: bytes (or "8GB") the memory cache may use; ``None``: half the memory available now.
    """
    cache = str(cache).lower()
    if cache not in CACHES:
        raise ValueError(f"cache must be one of {CACHES}, got {cache!r}")
    if cache in ("disk", "none") or not items:
        return "memory" if cache == "auto" else cache
    dtype = cache_dtype_for(cache_dtype, spatial_dims)
    item_bytes = None
    for item in items[:8]:  # the first readable item (unreadable ones are the run's to report or skip)
        try:
            item_bytes = packed_nbytes(pack_item(transform(dict(item), end=_first_random(transform)), dtype))
            break
        except Exception:  # noqa: BLE001
            continue
    if item_bytes is None:
        logger.info("cache %s: none of the first items could be preprocessed to estimate the cache; using memory",
                    cache)
        return "memory" if cache == "auto" else cache
    n = int(round(len(items) * float(cache_rate)))
    choice, why = choose_cache(n, item_bytes, parse_bytes(memory_budget), cache_dir)
    if cache == "auto":
        logger.info("cache auto (%s): %s -> %s", dtype, why, choice)
        return choice
    if choice != "memory":
        logger.warning("cache: memory will likely not fit: %s; set cache: auto (or disk) to avoid running out of "
                       "memory part-way", why)
    return cache

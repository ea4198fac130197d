"""The compact cache (medclass.data.cache): same tensors within the storage type's rounding, the auto choice,
and disk keys that follow the preprocessing."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from medclass.data.cache import (
    CompactCacheDataset, CompactPersistentDataset, cache_dtype_for, choose_cache, pack, pack_item, packed_nbytes,
    parse_bytes, resolve_cache, unpack, unpack_item,
)
from medclass.transforms import build_transforms


@pytest.fixture()
def pngs(tmp_path):
    rng = np.random.default_rng(0)
    items = []
    for i in range(6):
        path = tmp_path / f"img{i}.png"
        Image.fromarray((rng.random((80, 96)) * 255).astype(np.uint8)).save(path)
        items.append({"image": str(path), "label": np.array([i % 2, 1], np.float32), "id": f"img{i}"})
    return items


@pytest.mark.parametrize("dtype,bound", [("uint8", 0.5 / 255), ("float16", 1e-3), ("float32", 0.0)])
def test_pack_round_trip_within_the_storage_rounding(dtype, bound):
    from monai.data import MetaTensor

    x = MetaTensor(torch.randn(1, 20, 30) * 3 + 1, affine=torch.diag(torch.tensor([2.0, 3.0, 1.0, 1.0])))
    back = unpack(pack(x, dtype))
    assert back.dtype == torch.float32 and back.shape == x.shape
    span = float(x.max() - x.min())
    assert float((back - x).abs().max()) <= bound * (span if dtype == "uint8" else float(x.abs().max())) + 1e-6
    assert torch.equal(back.affine, x.affine)
    flat = unpack(pack(torch.full((1, 4, 4), 7.0), "uint8"))  # a constant image: no division by a zero range
    assert torch.equal(flat.as_tensor(), torch.full((1, 4, 4), 7.0))


def test_packed_item_is_small_and_keeps_the_rest():
    item = {"image": torch.rand(1, 224, 224), "label": torch.ones(14), "id": "a"}
    packed = pack_item(item, "uint8")
    assert packed["id"] == "a" and packed["label"] is item["label"] and packed["image"]["data"].dtype == torch.uint8
    assert packed_nbytes(packed) < 0.07 * 2**20  # the budget for a 224 px grey image
    assert packed_nbytes(pack_item(item, "float32")) > 0.19 * 2**20
    again = unpack_item(packed)
    assert again is not packed and torch.allclose(again["image"], item["image"], atol=0.5 / 255 + 1e-6)


@pytest.mark.parametrize("dtype", ["uint8", "float16"])
def test_memory_and_disk_caches_return_the_float_path_within_rounding(pngs, tmp_path, dtype):
    from monai.data import Dataset

    t = build_transforms("cxr", 2, [64, 64], train=True, augment={}, augment_on="batch")
    reference = Dataset(pngs, t)
    memory = CompactCacheDataset(pngs, t, cache_dtype=dtype, progress=False)
    disk = CompactPersistentDataset(pngs, t, cache_dir=tmp_path / "cache", cache_dtype=dtype)
    for i in range(len(pngs)):
        ref = reference[i]["image"]
        span = float(ref.max() - ref.min())
        tol = 0.5 / 255 * span + 1e-5 if dtype == "uint8" else 1e-3 * float(ref.abs().max())
        for ds in (memory, disk, disk):  # disk twice: written, then read back
            got = ds[i]
            assert got["image"].dtype == torch.float32 and got["image"].shape == ref.shape
            assert float((got["image"] - ref).abs().max()) <= tol
            assert got["id"] == pngs[i]["id"] and np.array_equal(np.asarray(got["label"]), pngs[i]["label"])
    assert memory._cache[0]["image"]["data"].dtype == (torch.uint8 if dtype == "uint8" else torch.float16)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == len(pngs)


def test_cached_items_are_not_changed_by_augmentation(pngs):
    t = build_transforms("cxr", 2, [64, 64], train=True, augment={"rotate_deg": 30}, augment_on="sample")
    ds = CompactCacheDataset(pngs, t, cache_dtype="uint8", progress=False)
    before = ds._cache[0]["image"]["data"].clone()
    t.set_random_state(0)
    a = ds[0]["image"]
    t.set_random_state(1)
    b = ds[0]["image"]
    assert not torch.allclose(a, b)  # augmented differently
    assert torch.equal(ds._cache[0]["image"]["data"], before)


def test_disk_cache_keys_change_with_the_preset_and_image_size(pngs, tmp_path):
    def names(preset, size):
        t = build_transforms(preset, 2, [size, size], train=True, augment={}, augment_on="batch")
        ds = CompactPersistentDataset(pngs[:1], t, cache_dir=tmp_path / "c", cache_dtype="uint8")
        ds[0]
        return {p.name for p in (tmp_path / "c").glob("*.pt")}

    first = names("cxr", 64)
    assert names("cxr", 64) == first  # the same preprocessing reuses its file
    second = names("cxr", 48) - first
    third = names("generic", 64) - first - second
    assert len(first) == len(second) == len(third) == 1


def test_choose_cache_by_budget_and_disk(tmp_path):
    mb = 2**20
    assert choose_cache(100, mb, memory_budget=200 * mb)[0] == "memory"
    choice, why = choose_cache(1000, mb, memory_budget=200 * mb, cache_dir=tmp_path / "new" / "cache")
    assert choice == "disk" and "1000 items x 1.000 MB" in why and "budget of 0.20 GB" in why
    choice, why = choose_cache(10**9, mb, memory_budget=200 * mb, cache_dir=tmp_path)
    assert choice == "none" and "free under" in why
    assert choose_cache(1000, mb, memory_budget=200 * mb)[0] == "none"  # no folder for a disk cache


def test_resolve_cache_logs_the_choice_and_warns_for_memory_over_budget(pngs, caplog):
    t = build_transforms("cxr", 2, [64, 64], train=True, augment={}, augment_on="batch")
    caplog.set_level(logging.INFO, logger="medclass.data.cache")
    assert resolve_cache("auto", pngs, t, memory_budget="1MB") == "memory"
    assert "6 items x 0.008 MB" in caplog.text and "-> memory" in caplog.text
    assert resolve_cache("memory", pngs, t, memory_budget=10) == "memory"
    assert any(r.levelno == logging.WARNING and "will likely not fit" in r.getMessage() for r in caplog.records)
    assert resolve_cache("disk", pngs, t) == "disk" and resolve_cache("none", [], t) == "none"
    with pytest.raises(ValueError, match="cache must be one of"):
        resolve_cache("ram", pngs, t)


def test_sizes_and_dtypes_parse():
    assert parse_bytes("8GB") == 8 * 2**30 and parse_bytes("512 MiB") == 512 * 2**20 and parse_bytes(1e3) == 1000
    assert parse_bytes(None) is None
    with pytest.raises(ValueError, match="memory_budget"):
        parse_bytes("lots")
    assert cache_dtype_for("auto", 2) == "uint8" and cache_dtype_for("auto", 3) == "float16"
    with pytest.raises(ValueError, match="cache_dtype"):
        cache_dtype_for("int4", 2)


def test_default_budget_is_shared_by_the_processes_of_a_node(monkeypatch):
    import medclass.data.cache as cache

    monkeypatch.setattr(cache, "available_memory", lambda: 8 * 2**30)
    mb = 2**20
    assert choose_cache(3000, mb)[0] == "memory"  # 2.9 GB within half of 8 GB
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun --nproc_per_node 4: 1 GB each
    choice, why = choose_cache(3000, mb)
    assert choice == "none" and "budget of 1.00 GB" in why

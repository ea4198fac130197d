import pytest

from medclass.vocab import flag


@pytest.mark.parametrize("value,expected", [(True, True), (False, False), (None, False), (1, True), (0, False),
                                            ("false", False), ("False", False), ("true", True), ("no", False),
                                            ("1", True), ("null", False)])
def test_flag(value, expected):
    assert flag(value) is expected


@pytest.mark.parametrize("value", ["maybe", 2, [True]])
def test_flag_rejects(value):
    with pytest.raises(ValueError, match="resume must be true or false"):
        flag(value, "resume")


@pytest.mark.parametrize("value,expected", [(None, None), ("None", None), ("null", None), ("", None),
                                            ("i3d", "i3d"), (0, 0)])
def test_optional(value, expected):
    from medclass.vocab import optional

    assert optional(value) == expected


def test_cached_dataset_memory_disk_none(tmp_path):
    """The three caches give the same deterministic items; disk writes files keyed by data and transform."""
    import numpy as np
    import pytest
    import torch

    from medclass.transforms import build_transforms
    from medclass.workflow import cached_dataset

    rng = np.random.default_rng(0)
    items = [{"image": rng.random((28, 28)).astype(np.float32), "label": np.array([i % 2], np.float32),
              "id": f"img{i}"} for i in range(4)]
    tf = build_transforms("generic", 2, (32, 32), train=False)
    ref = [cached_dataset(items, tf, "none")[i]["image"] for i in range(4)]
    for cache in ("memory", "disk"):
        ds = cached_dataset(items, tf, cache, cache_dir=tmp_path / "c", cache_dtype="float32")
        for i in range(4):
            torch.testing.assert_close(torch.as_tensor(ds[i]["image"]), torch.as_tensor(ref[i]))
        packed = cached_dataset(items, tf, cache, cache_dir=tmp_path / "c")  # default: uint8 in 2D
        for i in range(4):
            span = float(ref[i].max() - ref[i].min())
            assert float((torch.as_tensor(packed[i]["image"]) - ref[i]).abs().max()) <= 0.5 / 255 * span + 1e-6
    first = set((tmp_path / "c" / "float32").iterdir())
    assert len(first) == 4  # one file per item
    ds = cached_dataset(items, build_transforms("generic", 2, (48, 48), train=False), "disk", cache_dir=tmp_path / "c",
                        cache_dtype="float32")
    assert ds[0]["image"].shape[-2:] == (48, 48)  # a changed transform never reads the 32 px items
    assert len(set((tmp_path / "c" / "float32").iterdir())) == 5
    with pytest.raises(ValueError, match="cache_dir"):
        cached_dataset(items, tf, "disk")
    with pytest.raises(ValueError, match="cache must be one of"):
        cached_dataset(items, tf, "ram")


def test_thread_loader_gives_the_same_batches(tmp_path):
    import pytest
    import torch

    from medclass.workflow import data_loader

    data = [{"image": torch.full((1, 4), float(i)), "id": f"i{i}"} for i in range(10)]
    ref = [b["image"] for b in data_loader(data, batch_size=4)]
    for workers in (0, 2):
        got = [b["image"] for b in data_loader(data, batch_size=4, loader="thread", num_workers=workers)]
        assert len(got) == len(ref) == 3
        for g, r in zip(got, ref):
            assert torch.equal(g, r)
    assert len(list(data_loader(data, batch_size=4, loader="thread", drop_last=True))) == 2
    with pytest.raises(ValueError, match="loader must be one of"):
        data_loader(data, loader="gpu")

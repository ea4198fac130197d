"""Preset pipeline tests: shapes, dtypes, determinism, augmentation, collation and caching."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from monai.data import CacheDataset, DataLoader, Dataset, MetaTensor, list_data_collate
from monai.transforms import RandAffined, RandFlipd
from PIL import Image

import medclass.transforms.io as io_module
from medclass.transforms import (
    PRESETS,
    AdaptiveResize,
    LabelToTensor,
    Preset,
    RobustScaleIntensity,
    build_transforms,
    first_random_index,
    register_preset,
    resolve_augment,
    transform_error,
)
from tests.conftest import need
from tests.transforms.synth import make_dicom


def blob(shape, seed=0):
    """A smooth, asymmetric uint8 test image of ``shape`` (2D or 3D)."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(0, 1, s) for s in shape], indexing="ij")
    img = sum((k + 1) * g for k, g in enumerate(grids)) + 0.3 * rng.random(shape)
    img = (img - img.min()) / (img.max() - img.min())
    return (img * 255).astype(np.uint8)


def item(img, i=0, label=(1.0, np.nan)):
    label = np.array(label, np.float32)
    return {"image": img, "label": label, "id": f"case-{i}", "patient_id": f"p{i}", "age": 40.0 + i}


@pytest.mark.parametrize(
    "in_shape, size",
    [((28, 28), (28, 28)), ((64, 64), (224, 224)), ((40, 60), (32, 48)), ((28, 28), (64, 48))],
)
def test_output_shapes_2d(in_shape, size):
    t = build_transforms("cxr", spatial_dims=2, image_size=size)
    out = t(item(blob(in_shape)))
    img = out["image"]
    assert isinstance(img, MetaTensor) and img.shape == (1, *size) and img.dtype == torch.float32
    # robust scaling to [0, 1] then (x - 0.5) / 0.25: within [-2, 2], spanning most of it
    assert img.min() >= -2.0 - 1e-5 and img.max() <= 2.0 + 1e-5
    assert img.max() - img.min() > 3.0
    assert out["label"].dtype == torch.float32 and out["label"].shape == (2,)
    assert out["label"][0] == 1.0 and torch.isnan(out["label"][1])


def test_identity_size_keeps_values():
    img = blob((28, 28))
    out = build_transforms("generic", image_size=(28, 28))(item(img))["image"][0].numpy()
    expected = ((img - img.min()) / (img.max() - img.min()) - 0.5) / 0.25  # min-max, no resampling
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_output_shapes_3d():
    t = build_transforms("cxr", spatial_dims=3, image_size=(32, 32, 32), train=True)
    for _ in range(3):
        out = t(item(blob((28, 28, 28))))
        assert out["image"].shape == (1, 32, 32, 32) and out["image"].dtype == torch.float32
    affine = next(x for x in t.transforms if isinstance(x, RandAffined))
    rot = affine.rand_affine.rand_affine_grid.rotate_range
    assert len(rot) == 3 and all(r == pytest.approx(np.radians(10)) for r in rot)  # about all axes
    assert build_transforms("generic", spatial_dims=3, image_size=24)(item(blob((28, 28, 28))))["image"].shape == (
        1,
        24,
        24,
        24,
    )


def test_eval_deterministic_train_random():
    img = blob((64, 64))
    ev = build_transforms(image_size=(48, 48), train=False)
    a, b = ev(item(img))["image"], ev(item(img))["image"]
    assert torch.equal(a, b)
    assert first_random_index(ev) == len(ev.transforms)

    tr = build_transforms(image_size=(48, 48), train=True)
    tr.set_random_state(seed=0)
    outs = [tr(item(img))["image"] for _ in range(6)]
    assert all(o.shape == (1, 48, 48) for o in outs)
    distinct = []
    for o in outs:
        if not any(torch.allclose(o, d) for d in distinct):
            distinct.append(o)
    assert len(distinct) >= 4
    assert any(not torch.allclose(a, o) for o in outs)

    off = build_transforms(image_size=(48, 48), train=True, augment=False)
    assert torch.equal(off(item(img))["image"], a)
    off2 = build_transforms(image_size=(48, 48), train=True, augment={"enabled": False})
    assert first_random_index(off2) == len(off2.transforms)


@pytest.mark.parametrize("spatial_dims, shape", [(2, (40, 48)), (3, (20, 24, 28))])
def test_flip_acts_on_last_axis(spatial_dims, shape):
    img = blob(shape, seed=3)
    ev = build_transforms(spatial_dims=spatial_dims, image_size=shape)
    flip = build_transforms(
        spatial_dims=spatial_dims, image_size=shape, train=True, augment={"flip_prob": 1.0, "prob": 0.0}
    )
    assert [type(x) for x in flip.transforms].count(RandFlipd) == 1
    ref = ev(item(img))["image"]
    out = flip(item(img))["image"]
    assert torch.equal(out, torch.flip(ref, dims=[-1]))
    assert not torch.equal(out, torch.flip(ref, dims=[-2]))


def test_augment_overrides_and_validation():
    cfg = resolve_augment({"rotate_deg": 5, "prob": 0.2, "contrast_prob": 1.0})
    assert cfg["rotate_deg"] == 5.0 and cfg["affine_prob"] == 0.2 and cfg["contrast_prob"] == 1.0
    assert cfg["contrast_gamma"] == (0.8, 1.25) and cfg["flip_prob"] == 0.5
    assert resolve_augment(False) is None and resolve_augment({"enabled": False}) is None
    assert resolve_augment(None, "generic")["contrast_gamma"] is None
    t = build_transforms(train=True, augment={"rotate_deg": 0, "zoom": 0, "translate": 0, "flip_prob": 0})
    names = [type(x).__name__ for x in t.transforms]
    assert "RandAffined" not in names and "RandFlipd" not in names and "RandAdjustContrastd" in names
    for bad, err in (
        ({"flip_probability": 0.5}, ValueError),
        ({"prob": 1.5}, ValueError),
        ({"rotate_deg": -1}, ValueError),
        ({"zoom": 1.0}, ValueError),
        ({"contrast_gamma": (1.25, 0.8)}, ValueError),
        ({"padding_mode": "wrap"}, ValueError),
        ("yes", TypeError),
    ):
        with pytest.raises(err):
            build_transforms(train=True, augment=bad)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown preset 'pet'.*cxr"):
        build_transforms("pet")
    with pytest.raises(ValueError, match="image_size must be 3 positive ints"):
        build_transforms(spatial_dims=3, image_size=(224, 224))
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
        build_transforms(spatial_dims=1)
    t = build_transforms(spatial_dims=2, image_size=(32, 32))
    # MONAI's Compose wraps errors in RuntimeError("applying transform ..."); the cause names the item
    with pytest.raises(RuntimeError) as info:
        t(item(blob((28, 28, 28))))
    err = transform_error(info.value)
    assert isinstance(err, ValueError) and re.search(r"case-0.*\(28, 28, 28\)", str(err))
    with pytest.raises(RuntimeError) as info:
        Dataset([{"image": "/no/such/file.png", "id": "x"}], t)[0]
    err = transform_error(info.value)
    assert isinstance(err, FileNotFoundError) and "/no/such/file.png" in str(err)
    assert transform_error(KeyError("k")) is None


def test_non_key_fields_pass_through_and_inference_without_label():
    extra = {"k": [1, 2]}
    it = dict(item(blob((28, 28))), extra=extra)
    out = build_transforms(image_size=(32, 32), train=True)(it)
    assert out["id"] == "case-0" and out["patient_id"] == "p0" and out["age"] == 40.0
    assert out["extra"] is extra
    out = build_transforms(image_size=(32, 32))({"image": blob((28, 28)), "id": "x"})
    assert "label" not in out and out["image"].shape == (1, 32, 32)


def test_collate_mixed_sources_in_batches(tmp_path):
    """Arrays, PNGs and DICOMs share one metadata schema, so they collate together."""
    Image.fromarray(np.stack([blob((50, 40))] * 3, -1)).save(tmp_path / "rgb.png")
    make_dicom(tmp_path / "m1.dcm", blob((60, 50)).astype(np.uint16) * 4, photometric="MONOCHROME1", window=(500, 1000))
    items = [
        item(blob((28, 28)), 0),
        dict(item(None, 1), image=str(tmp_path / "rgb.png")),
        dict(item(None, 2), image=str(tmp_path / "m1.dcm")),
        item(blob((64, 64)), 3),
    ]
    for train in (False, True):
        t = build_transforms(image_size=(32, 32), train=train)
        loader = DataLoader(Dataset(items, t), batch_size=4, num_workers=0, collate_fn=list_data_collate)
        batch = next(iter(loader))
        assert batch["image"].shape == (4, 1, 32, 32) and batch["image"].dtype == torch.float32
        assert batch["label"].shape == (4, 2) and torch.isnan(batch["label"][:, 1]).all()
        assert batch["id"] == ["case-0", "case-1", "case-2", "case-3"]
        assert batch["patient_id"] == ["p0", "p1", "p2", "p3"]
        meta = batch["image"].meta
        assert meta["filename_or_obj"] == ["case-0", str(tmp_path / "rgb.png"), str(tmp_path / "m1.dcm"), "case-3"]
        assert meta["inverted"].tolist() == [False, False, True, False]


def test_cache_dataset_caches_the_deterministic_part(monkeypatch):
    calls = []
    real = io_module.read_image

    def counting(*args, **kwargs):
        calls.append(kwargs.get("name"))
        return real(*args, **kwargs)

    monkeypatch.setattr(io_module, "read_image", counting)
    items = [item(blob((28, 28), seed=i), i) for i in range(5)]
    t = build_transforms(image_size=(32, 32), train=True, augment={"prob": 1.0})
    assert first_random_index(t) == [type(x) for x in t.transforms].index(RandFlipd)
    ds = CacheDataset(items, t, cache_rate=1.0, num_workers=0, progress=False)
    assert len(calls) == 5
    loader = DataLoader(ds, batch_size=2, num_workers=0)
    epochs = [torch.cat([b["image"] for b in loader]) for _ in range(2)]
    assert len(calls) == 5  # two epochs, no re-reading
    assert not torch.allclose(epochs[0], epochs[1])  # the random part still runs every epoch
    # control: a plain Dataset reads every item every epoch
    calls.clear()
    plain = DataLoader(Dataset(items, t), batch_size=2, num_workers=0)
    for _ in range(2):
        list(plain)
    assert len(calls) == 10


def test_generic_preset_skips_dicom_window(tmp_path):
    a = np.tile(np.arange(0, 4096, 64, dtype=np.uint16), (64, 1))
    path = make_dicom(tmp_path / "ct.dcm", a, window=(1000, 400), modality="CT")
    cxr = build_transforms("cxr", image_size=(64, 64))({"image": str(path)})["image"]
    gen = build_transforms("generic", image_size=(64, 64))({"image": str(path)})["image"]
    assert cxr.meta["windowed"] and not gen.meta["windowed"]
    # generic: a linear ramp over the full range; cxr: saturated outside the window
    assert (cxr[0, 0] == cxr.max()).sum() > 30 and (gen[0, 0] == gen.max()).sum() == 1


def test_register_preset_with_hook():
    from monai.transforms import Lambdad

    p = Preset(
        name="test-hook",
        voi=False,
        intensity=lambda key, nd: [Lambdad(key, lambda x: x / 255.0)],
        augment={"flip_prob": 0.0},
        spatial_dims=(2,),
    )
    try:
        register_preset(p)
        with pytest.raises(ValueError, match="already registered"):
            register_preset(p)
        img = np.full((28, 28), 255, np.uint8)
        img[0, 0] = 0
        out = build_transforms("test-hook", image_size=(28, 28))(item(img))["image"]
        assert out[0, 1, 1] == pytest.approx(2.0) and out[0, 0, 0] == pytest.approx(-2.0)
        with pytest.raises(ValueError, match="supports spatial_dims"):
            build_transforms("test-hook", spatial_dims=3, image_size=8)
        assert "RandFlipd" not in [type(x).__name__ for x in build_transforms("test-hook", train=True).transforms]
    finally:
        PRESETS.pop("test-hook", None)
    with pytest.raises(ValueError, match="unknown augment keys"):
        register_preset(Preset(name="bad", augment={"nope": 1}))
    assert "bad" not in PRESETS


# ---------------------------------------------------------------------------------------------
# building blocks


def test_robust_scale_clips_outliers():
    rng = np.random.default_rng(0)
    x = rng.normal(100, 10, (1, 100, 100)).astype(np.float32)
    x[0, 0, 0] = 1e6  # a burned-in marker / hot pixel
    out = RobustScaleIntensity(0.5, 99.5)(x)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0
    assert 0.4 < np.median(out) < 0.6  # the outlier does not squash the image
    assert (out == 1.0).mean() == pytest.approx(0.005, abs=0.002)
    assert (RobustScaleIntensity()(np.full((1, 8, 8), 7.0)) == 0).all()
    t = RobustScaleIntensity()(MetaTensor(torch.from_numpy(x), meta={"filename_or_obj": "f"}))
    assert isinstance(t, MetaTensor) and t.meta["filename_or_obj"] == "f"
    with pytest.raises(ValueError, match="percentiles"):
        RobustScaleIntensity(50, 10)


def test_adaptive_resize_modes():
    checker = np.kron(np.array([[0, 1], [1, 0]] * 2, np.float32).reshape(4, 2), np.ones((4, 4), np.float32))[None]
    down = AdaptiveResize((8, 4))(torch.from_numpy(checker))  # 16x8 -> 8x4: area averaging of 2x2 blocks
    assert set(np.unique(down.numpy())) == {0.0, 1.0}
    block_avg = AdaptiveResize((4, 2))(torch.from_numpy(checker))
    np.testing.assert_allclose(block_avg.numpy(), checker[:, ::4, ::4])
    up = AdaptiveResize((32, 16))(torch.from_numpy(checker))  # upsampling: linear, not nearest
    vals = np.unique(up.numpy())
    assert len(vals) > 2 and vals.min() >= 0 and vals.max() <= 1
    x = torch.rand(1, 10, 10)
    assert AdaptiveResize((10, 10))(x) is x
    assert AdaptiveResize((5, 20))(x).shape == (1, 5, 20)  # mixed up / down
    with pytest.raises(ValueError, match="spatial dims"):
        AdaptiveResize((4, 4, 4))(x)


def test_label_to_tensor():
    t = LabelToTensor()
    assert t(1).tolist() == [1.0] and t(1).dtype == torch.float32
    out = t(np.array([0, np.nan, 1], np.float64))
    assert out.dtype == torch.float32 and torch.isnan(out[1]) and out[2] == 1
    assert t([0, 1]).shape == (2,)
    with pytest.raises(ValueError, match="1D vector"):
        t(np.zeros((2, 2)))
    with pytest.raises(TypeError, match="numeric"):
        t(["a"])


# ---------------------------------------------------------------------------------------------
# real data


def test_real_pneumoniamnist_pipeline(real_data):
    data = np.load(need(real_data, "medmnist/pneumoniamnist.npz"))
    items = [item(data["val_images"][i], i, label=data["val_labels"][i].astype(np.float32)) for i in range(8)]
    for size in ((28, 28), (224, 224)):
        t = build_transforms(image_size=size, train=True)
        batch = next(iter(DataLoader(Dataset(items, t), batch_size=8, num_workers=0)))
        assert batch["image"].shape == (8, 1, *size) and torch.isfinite(batch["image"]).all()
        assert batch["label"].shape == (8, 1)


def test_real_dicom_cxr_pipeline(real_data):
    path = need(real_data, "dicom/chest_xray/RG1_J2KI.dcm")
    out = build_transforms(image_size=(224, 224))({"image": str(path), "id": "rg1"})["image"]
    assert out.shape == (1, 224, 224) and torch.isfinite(out).all()
    assert out.meta["inverted"] and tuple(out.meta["original_shape"]) == (1955, 1841)
    assert out.meta["filename_or_obj"] == str(path)


def test_real_adrenal3d_pipeline(real_data):
    data = np.load(need(real_data, "medmnist/adrenalmnist3d.npz"))
    items = [item(data["test_images"][i], i, label=data["test_labels"][i].astype(np.float32)) for i in range(4)]
    t = build_transforms(spatial_dims=3, image_size=(32, 32, 32), train=True)
    batch = next(iter(DataLoader(Dataset(items, t), batch_size=2, num_workers=0)))
    assert batch["image"].shape == (2, 1, 32, 32, 32)


def test_real_nifti_3d_pipeline(real_data):
    path = sorted(need(real_data, "nifti/IXI_T1_ds_n10").glob("*.nii*"))[0]
    t = build_transforms("generic", spatial_dims=3, image_size=(32, 32, 32))
    out = t({"image": str(path), "id": "ixi"})["image"]
    assert out.shape == (1, 32, 32, 32) and torch.isfinite(out).all()
    # the affine follows the resize: voxel size grows by 120/32 and 90/32 (nominal 2 mm voxels)
    spacing = np.sqrt((out.affine[:3, :3].numpy() ** 2).sum(axis=0))
    np.testing.assert_allclose(spacing, [2 * 120 / 32, 2 * 120 / 32, 2 * 90 / 32], rtol=0.05)

"""3D presets on synthetic volumes: CT windows, spacing, orientation, MR normalisation, options, augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import CacheDataset, DataLoader, MetaTensor
from monai.transforms import Orientationd, RandAffined, RandFlipd, Spacingd

from medclass.transforms import (
    CT_WINDOWS,
    PRESETS,
    CropOrPad,
    WindowIntensity,
    ZScoreIntensity,
    build_transforms,
    first_random_index,
    resolve_options,
    resolve_window,
)
from tests.transforms.synth import make_series


def save_nifti(path, data, affine):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.asarray(data), np.asarray(affine, dtype=np.float64)), path)
    return str(path)


def item(image, i=0):
    return {"image": image, "label": np.array([1.0], np.float32), "id": f"vol-{i}", "patient_id": f"p{i}"}


def hu_phantom(shape=(20, 24, 16)):
    """Air (-1000) box with a water (0) body, a 40 HU (soft tissue level) core and a 1000 HU bone rod."""
    v = np.full(shape, -1000.0, np.float32)
    v[3:-3, 3:-3, 2:-2] = 0.0
    v[8:12, 8:12, 5:11] = 40.0
    v[4:6, 15:18, 3:13] = 1000.0
    return v


def unnormalise(t):
    """Undo the presets' fixed final normalisation (x - 0.5) / 0.25."""
    return t * 0.25 + 0.5


# ---------------------------------------------------------------------------------------------
# CT windows


@pytest.mark.parametrize("window", ["soft_tissue", (40, 400), [40.0, 400.0]])
def test_ct_window_by_name_and_numbers(window):
    v = hu_phantom()
    t = build_transforms("ct", spatial_dims=3, image_size=v.shape, window=window)
    out = t(item(v))["image"]
    assert isinstance(out, MetaTensor) and out.dtype == torch.float32 and out.shape == (1, *v.shape)
    w = unnormalise(out[0]).numpy()
    np.testing.assert_allclose(w[v == -1000], 0.0, atol=1e-6)  # air: below the window -> 0
    np.testing.assert_allclose(w[v == 1000], 1.0, atol=1e-6)  # bone: above 240 HU -> 1
    np.testing.assert_allclose(w[v == 40], 0.5, atol=1e-6)  # the level -> middle
    np.testing.assert_allclose(w[v == 0], (0 - (40 - 200)) / 400, atol=1e-6)  # water: 0.4


def test_ct_named_windows_and_errors():
    v = hu_phantom()
    lung = build_transforms("ct", spatial_dims=3, image_size=v.shape, window="lung")(item(v))["image"]
    w = unnormalise(lung[0]).numpy()
    level, width = CT_WINDOWS["lung"]
    assert (level, width) == (-600.0, 1500.0)
    np.testing.assert_allclose(w[v == -1000], (-1000 - (level - width / 2)) / width, atol=1e-6)  # 0.0333
    np.testing.assert_allclose(w[v == 1000], 1.0, atol=1e-6)
    assert set(CT_WINDOWS) >= {"soft_tissue", "lung", "bone", "brain", "abdomen", "liver", "mediastinum"}
    assert resolve_window("Soft Tissue") == (40.0, 400.0) and resolve_window("brain") == (40.0, 80.0)
    x = torch.tensor([[-1000.0, 0.0, 40.0, 80.0, 3000.0]])
    np.testing.assert_allclose(WindowIntensity("brain")(x).numpy(), [[0.0, 0.0, 0.5, 1.0, 1.0]])
    for bad, pattern in [("muscle", "unknown CT window 'muscle'"), ((40,), "level, width"), ((40, 0), "width must be > 0")]:
        with pytest.raises(ValueError, match=pattern):
            build_transforms("ct", spatial_dims=3, image_size=8, window=bad)


def test_ct_keeps_hounsfield_units_from_dicom(tmp_path):
    """The ct preset ignores the DICOM window (voi=False): the window applies to HU."""
    vol = np.full((4, 8, 8), 1024, np.uint16)  # stored 1024 with intercept -1024 -> 0 HU (water)
    vol[:, :2] = 0  # -1024 HU air
    make_series(tmp_path / "s", vol, rescale=[(1.0, -1024.0)] * 4)
    out = build_transforms("ct", spatial_dims=3, image_size=None)({"image": str(tmp_path / "s")})["image"]
    assert not out.meta["windowed"] and out.meta["rescaled"]
    np.testing.assert_allclose(np.unique(unnormalise(out).numpy()), [0.0, 0.4], atol=1e-6)


# ---------------------------------------------------------------------------------------------
# geometry: spacing, orientation, crop / pad


def test_spacing_resamples_shape_and_affine(tmp_path):
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    affine[:3, 3] = (10, -20, 30)
    path = save_nifti(tmp_path / "v.nii.gz", hu_phantom((41, 31, 21)), affine)
    out = build_transforms("ct", spatial_dims=3, image_size=None, spacing=(2.0, 2.0, 2.0))({"image": path})["image"]
    # extent (n - 1) * old / new + 1 voxels: 40/2+1, 30/2+1, 20*2/2+1
    assert out.shape == (1, 21, 16, 21)
    np.testing.assert_allclose(np.linalg.norm(out.affine[:3, :3].numpy(), axis=0), [2.0, 2.0, 2.0])
    np.testing.assert_allclose(out.affine[:3, 3].numpy(), (10, -20, 30), atol=1e-6)  # first voxel centre kept
    iso = build_transforms("ct", spatial_dims=3, image_size=None, spacing=1.0)({"image": path})["image"]
    assert iso.shape == (1, 41, 31, 41)  # only the 2 mm axis is resampled
    native = build_transforms("ct", spatial_dims=3, image_size=None)({"image": path})["image"]
    assert native.shape == (1, 41, 31, 21)  # spacing=None keeps the voxel size


def test_lps_nifti_comes_out_ras_with_the_marker_flipped(tmp_path):
    shape = (5, 6, 30)  # non-cubic: 30 slices
    v = np.zeros(shape, np.float32)
    v[1, 2, 3] = 1000.0  # marker
    v[0, 0, 25] = 500.0  # second marker near the other end of the slice axis
    lps = np.diag([-2.0, -3.0, 4.0, 1.0])  # i towards Left, j towards Posterior: LPS voxel order
    lps[:3, 3] = (50.0, 60.0, -70.0)
    path = save_nifti(tmp_path / "lps.nii.gz", v, lps)
    t = build_transforms("mr", spatial_dims=3, image_size=None, percentiles=(0, 100))
    out = t({"image": path})["image"]
    assert out.shape == (1, 5, 6, 30)
    o = unnormalise(out[0]).numpy()
    assert np.argwhere(o == o.max()).tolist() == [[5 - 1 - 1, 6 - 1 - 2, 3]]  # x and y flipped, z kept
    assert o[4, 5, 25] == pytest.approx(0.5)
    np.testing.assert_allclose(np.diag(out.affine.numpy()), [2.0, 3.0, 4.0, 1.0])
    import nibabel as nib

    assert nib.aff2axcodes(out.affine.numpy()) == ("R", "A", "S")
    # the marker is at the same place in the world before and after
    before = lps @ np.array([1, 2, 3, 1.0])
    after = out.affine.numpy() @ np.array([3, 3, 3, 1.0])
    np.testing.assert_allclose(after, before)


def test_permuted_axes_non_cubic_volume_stays_aligned(tmp_path):
    """IXI-like voxel order (P, S, R) with 30 slices: reoriented to RAS, then resized; the marker stays put."""
    shape = (24, 20, 30)  # i: posterior, j: superior, k: right
    affine = np.array([[0, 0, 1.5, -20], [-2.0, 0, 0, 40], [0, 2.5, 0, -25], [0, 0, 0, 1]])
    v = np.zeros(shape, np.float32)
    v[4:8, 14:18, 20:26] = 1.0  # a bright block: posterior-ish, superior, right
    path = save_nifti(tmp_path / "psr.nii.gz", v, affine)
    out = build_transforms("mr", spatial_dims=3, image_size=None, percentiles=(0, 100))({"image": path})["image"]
    assert out.shape == (1, 30, 24, 20)  # (R, A, S) = (k, reversed i, j)
    o = unnormalise(out[0]).numpy()
    np.testing.assert_array_equal(o, np.transpose(v, (2, 0, 1))[:, ::-1, :])

    def block_centre(img, aff):
        idx = np.argwhere(img > 0.5).mean(axis=0)
        return (aff @ np.array([*idx, 1.0]))[:3]

    centre = block_centre(v, affine)
    np.testing.assert_allclose(block_centre(o, out.affine.numpy()), centre, atol=1e-6)
    resized = build_transforms("mr", spatial_dims=3, image_size=(32, 32, 32), percentiles=(0, 100))(
        {"image": path}
    )["image"]
    assert resized.shape == (1, 32, 32, 32)
    r = unnormalise(resized[0]).numpy()
    # the block's centre of mass (weighted by intensity) moves by less than one output voxel
    idx = (np.argwhere(r > 0.25) * r[r > 0.25][:, None]).sum(axis=0) / r[r > 0.25].sum()
    moved = (resized.affine.numpy() @ np.array([*idx, 1.0]))[:3] - centre
    voxel = np.linalg.norm(resized.affine.numpy()[:3, :3], axis=0)
    assert np.all(np.abs(moved) < voxel), (moved, voxel)


def test_crop_pad_keeps_voxel_size_and_pads_with_background(tmp_path):
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    path = save_nifti(tmp_path / "v.nii.gz", hu_phantom((20, 24, 16)), affine)
    t = build_transforms("ct", spatial_dims=3, image_size=(16, 32, 16), size_mode="crop_pad")
    out = t({"image": path})["image"]
    assert out.shape == (1, 16, 32, 16)
    np.testing.assert_allclose(np.linalg.norm(out.affine[:3, :3].numpy(), axis=0), [1.0, 1.0, 2.0])
    w = unnormalise(out[0]).numpy()
    assert (w[:, :4] == 0).all() and (w[:, -4:] == 0).all()  # 4 voxels of air padding either side
    np.testing.assert_allclose(out.affine[:3, 3].numpy(), [2.0, -4.0, 0.0])  # crop 2, pad 4 voxels
    x = torch.zeros(1, 4, 4) - 3.0
    assert CropOrPad((6, 2))(x).min() == -3.0  # pads with the image minimum


# ---------------------------------------------------------------------------------------------
# MR normalisation


def body_phantom(shape=(32, 28, 24), seed=0):
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    body = sum(g**2 for g in grid) < 0.6
    v = np.zeros(shape, np.float32)
    v[body] = rng.normal(400.0, 60.0, body.sum())
    v[~body] = np.abs(rng.normal(0.0, 3.0, (~body).sum()))  # background noise
    return v, body


def test_mr_zscore_within_the_body():
    v, body = body_phantom()
    out = build_transforms("mr", spatial_dims=3, image_size=None, mr_norm="zscore")(item(v))["image"][0].numpy()
    assert abs(out[body].mean()) < 0.01 and abs(out[body].std() - 1.0) < 0.01
    assert out[~body].max() < -5  # background well below the body (not in the statistics)
    np.testing.assert_allclose(out, (v - v[body].mean()) / v[body].std(), rtol=1e-3, atol=1e-3)  # one linear map
    z = ZScoreIntensity()(torch.full((1, 4, 4, 4), 7.0))
    assert (z == 0).all()


def test_mr_percentile_default():
    v, _ = body_phantom()
    out = build_transforms("mr", spatial_dims=3, image_size=(16, 16, 16))(item(v))["image"]
    assert out.shape == (1, 16, 16, 16)
    assert out.min() >= -2.0 - 1e-5 and out.max() <= 2.0 + 1e-5 and out.max() - out.min() > 3.5


# ---------------------------------------------------------------------------------------------
# options


def test_options_resolution_and_validation():
    ct = resolve_options("ct")
    assert ct == {"size_mode": "resize", "axcodes": "RAS", "spacing": None, "window": (40.0, 400.0)}
    mr = resolve_options("mr", mr_norm="zscore", spacing=1.5, window=None)  # None: ignored / default
    assert mr["spacing"] == (1.5, 1.5, 1.5) and mr["mr_norm"] == "zscore" and mr["percentiles"] == (0.5, 99.5)
    assert resolve_options("generic")["percentiles"] == (0.0, 100.0)
    assert resolve_options("ct", axcodes="lps")["axcodes"] == "LPS"
    bad = [
        (dict(preset="mr", window="lung"), "option 'window' does not apply to preset 'mr'"),
        (dict(preset="ct", options={"windw": "lung"}), "unknown option 'windw'"),
        (dict(preset="generic", spacing=1.0), "option 'spacing' does not apply"),
        (dict(preset="ct", size_mode="crop"), "size_mode must be one of"),
        (dict(preset="ct", spacing=(1.0, 0.0, 1.0)), "spacing must be None"),
        (dict(preset="ct", spacing=(1.0, 1.0)), "spacing must be None"),
        (dict(preset="ct", axcodes="RAR"), "axcodes must name each"),
        (dict(preset="mr", mr_norm="minmax"), "mr_norm must be one of"),
        (dict(preset="mr", percentiles=(99, 1)), "percentiles must satisfy"),
    ]
    for kwargs, pattern in bad:
        with pytest.raises(ValueError, match=pattern):
            build_transforms(spatial_dims=3, image_size=8, **kwargs)
    # the options dict (as a config would pass it); keyword arguments take precedence
    t = build_transforms("ct", 3, 8, options={"window": "lung", "size_mode": "crop_pad"}, window="bone")
    names = [type(x).__name__ for x in t.transforms]
    assert "CropOrPadd" in names and "AdaptiveResized" not in names
    assert next(x for x in t.transforms if type(x).__name__ == "WindowIntensityd").windower.level == 400.0


def test_pipeline_steps_and_cache_boundary():
    t = build_transforms("ct", 3, (16, 16, 16), train=True, spacing=(1.5, 1.5, 2.0))
    names = [type(x).__name__ for x in t.transforms]
    assert names[:7] == ["ReadImaged", "RequireContentd", "LabelToTensord", "Orientationd", "Spacingd",
                         "WindowIntensityd", "AdaptiveResized"]
    assert first_random_index(t) == 7 and names[7] == "RandFlipd"
    assert names[-2:] == ["NormalizeIntensityd", "EnsureTyped"]
    assert {"RandAffined", "RandScaleIntensityd", "RandShiftIntensityd"} <= set(names)
    orient = next(x for x in t.transforms if isinstance(x, Orientationd))
    assert orient.ornt_transform.axcodes == "RAS"
    assert next(x for x in t.transforms if isinstance(x, Spacingd)).spacing_transform.pixdim.tolist() == [1.5, 1.5, 2.0]
    mr = build_transforms("mr", 3, 16, mr_norm="zscore")
    assert "NormalizeIntensityd" not in [type(x).__name__ for x in mr.transforms]  # z-scores kept as they are
    assert first_random_index(mr) == len(mr.transforms)


# ---------------------------------------------------------------------------------------------
# augmentation, determinism, pass-through


def test_3d_train_augment_changes_values_not_shape_and_eval_is_deterministic():
    v, _ = body_phantom((24, 20, 16))
    for preset in ("ct", "mr"):
        ev = build_transforms(preset, 3, (16, 16, 16))
        a, b = ev(item(v))["image"], ev(item(v))["image"]
        assert torch.equal(a, b)
        tr = build_transforms(preset, 3, (16, 16, 16), train=True, augment={"prob": 1.0})
        tr.set_random_state(seed=0)
        outs = [tr(item(v))["image"] for _ in range(3)]
        assert all(o.shape == (1, 16, 16, 16) and o.dtype == torch.float32 for o in outs)
        assert all(not torch.allclose(o, a) for o in outs)
        assert not torch.allclose(outs[0], outs[1])
        rot = next(x for x in tr.transforms if isinstance(x, RandAffined)).rand_affine.rand_affine_grid.rotate_range
        assert len(rot) == 3  # about every axis


def test_3d_flip_axes_default_left_right_and_configurable():
    v, _ = body_phantom((20, 18, 16), seed=2)
    ref = build_transforms("ct", 3, v.shape)(item(v))["image"]
    flip = build_transforms("ct", 3, v.shape, train=True, augment={"flip_prob": 1.0, "prob": 0.0})
    assert [type(x) for x in flip.transforms].count(RandFlipd) == 1
    assert torch.equal(flip(item(v))["image"], torch.flip(ref, dims=[1]))  # RAS axis 0: left-right
    lps = build_transforms("ct", 3, v.shape, axcodes="PLS", train=True, augment={"flip_prob": 1.0, "prob": 0.0})
    assert next(x for x in lps.transforms if isinstance(x, RandFlipd)).flipper.spatial_axis == 1
    both = build_transforms("ct", 3, v.shape, train=True, augment={"flip_prob": 1.0, "prob": 0.0, "flip_axes": [0, 2]})
    assert torch.equal(both(item(v))["image"], torch.flip(ref, dims=[1, 3]))
    # generic arrays (D, H, W) keep flipping the last axis
    gen = build_transforms("generic", 3, v.shape, train=True, augment={"flip_prob": 1.0, "prob": 0.0})
    assert next(x for x in gen.transforms if isinstance(x, RandFlipd)).flipper.spatial_axis == 2
    with pytest.raises(ValueError, match="axis 3 out of range"):
        build_transforms("ct", 3, 8, train=True, augment={"flip_axes": [3]})


def test_fields_pass_through_and_batches_collate(tmp_path):
    v = hu_phantom()
    items = [dict(item(v + 10 * i, i), age=50.0 + i) for i in range(3)]
    items.append({"image": save_nifti(tmp_path / "n.nii.gz", v, np.diag([-1.0, 1, 1, 1])), "id": "vol-3",
                  "label": np.array([0.0], np.float32), "patient_id": "p3", "age": 53.0})
    t = build_transforms("ct", 3, (16, 16, 16), train=True)
    ds = CacheDataset(items, t, cache_rate=1.0, num_workers=0, progress=False)
    batch = next(iter(DataLoader(ds, batch_size=4, num_workers=0)))
    assert batch["image"].shape == (4, 1, 16, 16, 16) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (4, 1) and batch["id"] == ["vol-0", "vol-1", "vol-2", "vol-3"]
    assert batch["patient_id"] == ["p0", "p1", "p2", "p3"] and batch["age"].tolist() == [50.0, 51.0, 52.0, 53.0]


def test_ct_and_mr_work_on_2d_slices(tmp_path):
    from tests.transforms.synth import make_dicom

    a = np.full((32, 32), 1024, np.uint16)
    a[:, :8] = 0
    path = make_dicom(tmp_path / "ct.dcm", a, slope=1.0, intercept=-1024.0, window=(1000, 100), modality="CT")
    out = build_transforms("ct", 2, (16, 16), window="soft_tissue")({"image": str(path)})["image"]
    assert out.shape == (1, 16, 16)
    assert unnormalise(out[0, :, 0]).max() == 0.0 and unnormalise(out[0, :, -1]).min() == pytest.approx(0.4)
    assert "Orientationd" not in [type(x).__name__ for x in build_transforms("mr", 2, (16, 16)).transforms]
    assert set(PRESETS) >= {"cxr", "generic", "ct", "mr"}


def test_bundle_style_config_passes_options_as_top_level_keys():
    from monai.bundle import ConfigParser

    parser = ConfigParser(
        {
            "window": [50, 400],
            "spacing": [1.5, 1.5, 2.0],
            "preprocessing": {
                "_target_": "medclass.transforms.build_transforms",
                "preset": "ct",
                "spatial_dims": 3,
                "image_size": [16, 16, 16],
                "train": False,
                "window": "@window",
                "spacing": "@spacing",
                "size_mode": "crop_pad",
                "mr_norm": None,  # an option of another preset, left unset: ignored
            },
        }
    )
    t = parser.get_parsed_content("preprocessing")
    names = [type(x).__name__ for x in t.transforms]
    assert names[3:7] == ["Orientationd", "Spacingd", "WindowIntensityd", "CropOrPadd"]
    out = t(item(hu_phantom()))["image"]
    assert out.shape == (1, 16, 16, 16)

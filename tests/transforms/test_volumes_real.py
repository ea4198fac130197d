"""3D reading and presets on the real public volumes (skipped where ``MEDCLASS_DATA`` is absent).

Axis conventions checked here: a DICOM series reads as ``(1, columns, rows, slices)`` with slices in
ascending position along the slice normal and the RAS affine ITK computes; NIfTI keeps its voxel
order and nibabel's affine; ``ct`` / ``mr`` reorient to RAS exactly as ``nibabel.as_closest_canonical``.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset

from medclass.transforms import build_transforms, read_image, transform_error
from tests.conftest import need

SERIES = "dicom/mr_t1_mprage_series"
IXI = "nifti/IXI_T1_ds_n10"
PROSTATE = "nifti/misc/test_0000_t2_tse_tra_4.nii.gz"
DWI = "nifti/misc/test_0000_ep2d_diff_tra_7.nii.gz"


def unnormalise(t):
    return t * 0.25 + 0.5


def centroid_world(img: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World position (mm) of the intensity centre of mass."""
    w = np.clip(img, 0, None).astype(np.float64)
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in w.shape], indexing="ij"), axis=-1)
    c = (idx * w[..., None]).reshape(-1, 3).sum(axis=0) / w.sum()
    return (affine @ np.array([*c, 1.0]))[:3]


@pytest.fixture(scope="module")
def mprage(real_data):
    folder = need(real_data, SERIES)
    out, meta = read_image(folder, spatial_dims=3, voi=False)
    return folder, out, meta


@pytest.mark.slow
def test_mr_dicom_series_folder(mprage):
    folder, out, meta = mprage
    # (columns, rows, slices): 256 x 256 in-plane, 176 sagittal slices
    assert out.shape == (1, 256, 256, 176) and out.dtype == np.float32
    assert meta["source_format"] == "dicom" and meta["modality"] == "MR"
    assert meta["original_shape"] == (256, 256, 176)
    assert meta["spacing"] == pytest.approx((1.0, 1.0, 1.0), abs=1e-3)
    affine = meta["affine"]
    assert abs(abs(np.linalg.det(affine[:3, :3])) - 1.0) < 1e-3  # 1 mm isotropic
    assert nib.aff2axcodes(affine) == ("P", "I", "R")  # sagittal acquisition: columns A->P, rows S->I
    with pytest.raises(ValueError, match="spatial_dims=3"):
        read_image(folder, spatial_dims=2)


@pytest.mark.slow
def test_mr_dicom_series_matches_itk(mprage):
    """Same voxels and the same affine as MONAI's ITKReader (GDCM sorting by position)."""
    from monai.transforms import LoadImage

    folder, out, meta = mprage
    ref, ref_meta = LoadImage(image_only=False, reader="ITKReader")(str(folder))
    np.testing.assert_array_equal(out[0], ref.numpy())
    np.testing.assert_allclose(meta["affine"], np.asarray(ref_meta["affine"]), atol=1e-6)


@pytest.mark.slow
def test_mr_dicom_series_through_mr_preset(real_data):
    folder = need(real_data, SERIES)
    out = build_transforms("mr", 3, (64, 64, 64))({"image": str(folder), "id": "mprage"})["image"]
    assert out.shape == (1, 64, 64, 64) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert nib.aff2axcodes(out.affine.numpy()) == ("R", "A", "S")
    np.testing.assert_allclose(np.linalg.norm(out.affine[:3, :3].numpy(), axis=0), [176 / 64, 4.0, 4.0], rtol=1e-3)
    # axis 2 runs inferior -> superior: the top slices reach the vertex (little head), the bottom ones the neck
    head = unnormalise(out[0]).numpy() > 0.15
    area = head.sum(axis=(0, 1))
    assert area[-3:].mean() < 0.1 * area[:3].mean()


def test_ixi_affine_survives_reading_and_mr_preset(real_data):
    path = sorted(need(real_data, IXI).glob("*.nii*"))[0]
    img = nib.load(str(path))
    out, meta = read_image(path, spatial_dims=3)
    assert out.shape == (1, 120, 120, 90)
    np.testing.assert_allclose(meta["affine"], img.affine)  # nibabel's (RAS) affine, as MONAI keeps it
    assert nib.aff2axcodes(img.affine) == ("P", "S", "R")
    # mr preset at native size: exactly nibabel's closest canonical (RAS) image
    canon = nib.as_closest_canonical(img)
    ras = build_transforms("mr", 3, None, percentiles=(0, 100))({"image": str(path)})["image"]
    assert ras.shape == (1, *canon.shape) == (1, 90, 120, 120)
    np.testing.assert_allclose(ras.affine.numpy(), canon.affine, atol=1e-6)
    data = canon.get_fdata()
    np.testing.assert_allclose(unnormalise(ras[0]).numpy(), (data - data.min()) / np.ptp(data), atol=1e-6)
    # resampled to 3 mm and resized: the affine follows, the head stays where it was in the world
    small = build_transforms("mr", 3, (48, 48, 48), spacing=3.0)({"image": str(path)})["image"]
    assert small.shape == (1, 48, 48, 48)
    voxel = np.linalg.norm(small.affine[:3, :3].numpy(), axis=0)
    np.testing.assert_allclose(voxel, [3.0 * 60 / 48, 3.0 * 80 / 48, 3.0 * 80 / 48], rtol=0.02)
    before = centroid_world(out[0], img.affine)
    after = centroid_world(unnormalise(small[0]).numpy(), small.affine.numpy())
    assert np.all(np.abs(after - before) < voxel), (before, after)


def test_prostate_t2_non_cubic_through_mr(real_data):
    path = need(real_data, PROSTATE)
    img = nib.load(str(path))
    assert img.shape == (384, 384, 19)
    out = build_transforms("mr", 3, (64, 64, 32))({"image": str(path), "id": "prostate"})["image"]
    assert out.shape == (1, 64, 64, 32) and torch.isfinite(out).all() and out.dtype == torch.float32
    assert nib.aff2axcodes(out.affine.numpy()) == ("R", "A", "S")
    voxel = np.linalg.norm(out.affine[:3, :3].numpy(), axis=0)
    np.testing.assert_allclose(voxel, [384 * 0.5 / 64, 384 * 0.5 / 64, 19 * 3.0 / 32], rtol=0.01)
    before = centroid_world(np.asarray(img.dataobj, np.float32), img.affine)
    after = centroid_world(unnormalise(out[0]).numpy(), out.affine.numpy())
    assert np.all(np.abs(after - before) < voxel), (before, after)
    z = build_transforms("mr", 3, (64, 64, 32), mr_norm="zscore")({"image": str(path)})["image"]
    assert z.shape == (1, 64, 64, 32) and z.min() < -0.5 and z.max() > 2


def test_dwi_is_a_3d_volume(real_data):
    """The shared DWI file is a single 3D volume (one b-value), not a 4D series."""
    out, meta = read_image(need(real_data, DWI), spatial_dims=3)
    assert out.shape == (1, 84, 128, 19) and meta["source_format"] == "nifti"


@pytest.mark.parametrize("npz, size", [("adrenalmnist3d.npz", 28), ("adrenalmnist3d_64.npz", 64)])
def test_adrenalmnist3d_generic(real_data, npz, size):
    data = np.load(need(real_data, f"medmnist/{npz}"))
    images, labels = data["test_images"][:4], data["test_labels"][:4]
    assert images.shape[1:] == (size, size, size)
    items = [
        {"image": images[i], "label": labels[i].astype(np.float32), "id": f"adrenal-{i}"} for i in range(len(images))
    ]
    ev = build_transforms("generic", 3, size)
    out = ev(items[0])["image"]
    assert out.shape == (1, size, size, size) and out.dtype == torch.float32
    v = images[0].astype(np.float32)
    np.testing.assert_allclose(unnormalise(out[0]).numpy(), (v - v.min()) / (v.max() - v.min()), atol=1e-6)
    np.testing.assert_allclose(out.affine.numpy(), np.eye(4))  # arrays: identity affine, (D, H, W) kept
    tr = build_transforms("generic", 3, size, train=True)
    batch = next(iter(DataLoader(Dataset(items, tr), batch_size=4, num_workers=0)))
    assert batch["image"].shape == (4, 1, size, size, size) and batch["label"].shape == (4, 1)
    assert batch["id"] == [f"adrenal-{i}" for i in range(4)]


def test_real_ct_slice_into_3d_pipeline(real_data):
    path = need(real_data, "dicom/misc/CT-MONO2-16-ankle.dcm")
    with pytest.raises(RuntimeError) as info:
        build_transforms("ct", 3, 32)({"image": str(path), "id": "ankle"})
    err = transform_error(info.value)
    assert isinstance(err, ValueError) and str(path) in str(err) and "2D image" in str(err)
    # as a 2D slice the ct preset windows the HU
    out = build_transforms("ct", 2, (64, 64), window="bone")({"image": str(path)})["image"]
    assert out.shape == (1, 64, 64) and out.min() >= -2 - 1e-5 and out.max() <= 2 + 1e-5

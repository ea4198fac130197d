"""3D: a DICOM series, a multi-frame DICOM and NIfTI files of one volume (stored in any order, with a matching affine)
come out of every preset as the same tensor, and ``generic`` gives files the ``(D, H, W)`` order of arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medclass.transforms import build_transforms, read_image
from tests.transforms.synth import make_enhanced_multiframe, make_series
from tests.transforms.test_orientation import PLANES, save_nifti


def coded_volume(n=6, rows=5, cols=4):
    k, r, c = np.meshgrid(np.arange(n), np.arange(rows), np.arange(cols), indexing="ij")
    return (100 * k + 10 * r + c).astype(np.int16)


def volume_sources(tmp_path, orientation):
    """The same volume as a series folder, a multi-frame file and NIfTI files stored in other orders."""
    import nibabel as nib

    vol = coded_volume()
    make_series(tmp_path / "series", vol, orientation=orientation, pixel_spacing=(0.8, 0.6), slice_spacing=2.5)
    normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
    positions = np.asarray((-40.0, -30.0, 10.0)) + np.arange(len(vol))[:, None] * 2.5 * normal
    sources = {
        "series": tmp_path / "series",
        "multiframe": make_enhanced_multiframe(tmp_path / "mf.dcm", vol, positions, orientation=orientation),
    }
    ijk, meta = read_image(tmp_path / "series", spatial_dims=3, voi=False)
    itk_like = save_nifti(tmp_path / "itk.nii.gz", ijk[0].astype(np.int16), meta["affine"])  # (cols, rows, slices)
    sources["nifti-itk"] = itk_like
    canon = nib.as_closest_canonical(nib.load(str(itk_like)))
    sources["nifti-ras"] = save_nifti(tmp_path / "ras.nii.gz", np.asarray(canon.dataobj), canon.affine)
    data, affine = ijk[0].astype(np.int16), meta["affine"]
    perm = np.eye(4)[:, [2, 0, 1, 3]]  # store as (slices, cols, rows), last axis reversed
    data = np.transpose(data, (2, 0, 1))
    affine = affine @ perm
    f = np.eye(4)
    f[2, 2], f[2, 3] = -1.0, data.shape[2] - 1
    sources["nifti-permuted"] = save_nifti(tmp_path / "perm.nii.gz", np.flip(data, 2).copy(), affine @ f)
    return vol, sources


@pytest.mark.parametrize("orientation", [PLANES["axial"], PLANES["sagittal"], PLANES["coronal"]],
                         ids=["axial", "sagittal", "coronal"])
@pytest.mark.parametrize("preset", ["generic", "ct", "mr"])
def test_3d_sources_one_orientation_through_every_preset(tmp_path, orientation, preset):
    _, sources = volume_sources(tmp_path, orientation)
    pre = build_transforms(preset, 3, None)
    ref = pre({"image": str(sources["series"])})["image"]
    for name, path in sources.items():
        out = pre({"image": str(path)})["image"]
        assert out.shape == ref.shape, name
        torch.testing.assert_close(out.as_tensor(), ref.as_tensor(), msg=name)
        np.testing.assert_allclose(out.affine.numpy(), ref.affine.numpy(), atol=1e-4, err_msg=name)


def test_3d_generic_files_come_out_like_stacked_arrays(tmp_path):
    """generic: an axial series comes out as its slices stacked (D, H, W), as the same volume given as an array."""
    vol, sources = volume_sources(tmp_path, PLANES["axial"])
    pre = build_transforms("generic", 3, None)
    as_array = pre({"image": vol.astype(np.float32)})["image"]
    assert as_array.shape == (1, *vol.shape)
    for name, path in sources.items():
        torch.testing.assert_close(pre({"image": str(path)})["image"].as_tensor(), as_array.as_tensor(), msg=name)

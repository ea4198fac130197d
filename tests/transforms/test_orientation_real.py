"""Orientation on the real public data: a chest X-ray as DICOM, PNG and viewer-style NIfTI gives one array and one
preprocessed tensor; a real MR series and its NIfTI conversions give one tensor (skipped where ``MEDCLASS_DATA`` is
absent; the viewer-style conversions need SimpleITK, from the ``label`` extras)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image

from medclass.transforms import ReadImage, build_transforms, input_geometry, read_image
from tests.conftest import need
from tests.transforms.test_orientation import flip_axis, save_nifti, swap_axes

CXR = "dicom/chest_xray"
NIH_DCM = f"{CXR}/NIH_CXR14_1.3.6.1.4.1.11129.5.5.110503645592756492463169821050252582267888.dcm"
RG1 = f"{CXR}/RG1_J2KI.dcm"
SERIES = "dicom/mr_t1_mprage_series"


def normalised(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return (x - x.min()) / (x.max() - x.min())


def viewer_nifti(sitk, dicom, path):
    """The DICOM as 3D Slicer / SimpleITK writes it: (columns, rows, 1), LPS direction converted to RAS."""
    sitk.WriteImage(sitk.ReadImage(str(dicom)), str(path))
    return path


def test_nih_chest_xray_as_dicom_png_and_nifti_gives_one_array_and_one_tensor(real_data, tmp_path):
    import nibabel as nib

    sitk = pytest.importorskip("SimpleITK")
    dcm = need(real_data, NIH_DCM)
    ds = pydicom.dcmread(dcm)
    assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.BitsStored == 8
    Image.fromarray(ds.pixel_array.astype(np.uint8)).save(tmp_path / "cxr.png")
    itk = viewer_nifti(sitk, dcm, tmp_path / "slicer.nii.gz")
    img = nib.load(str(itk))
    assert img.shape == (1024, 1024, 1)
    canon = nib.as_closest_canonical(img)  # nibabel, RAS affine: both in-plane axes reversed
    data, affine = swap_axes(np.asarray(img.dataobj)[..., 0], img.affine)  # transposed back to (rows, columns) ...
    data, affine = flip_axis(data, affine, 1)  # ... and stored mirrored, with the affine to match
    sources = {
        "dicom": dcm,
        "png": tmp_path / "cxr.png",
        "nifti-slicer": itk,
        "nifti-nibabel-ras": save_nifti(tmp_path / "ras.nii.gz", np.asarray(canon.dataobj), canon.affine),
        "nifti-transposed-mirrored": save_nifti(tmp_path / "tm.nii.gz", data, affine),
    }
    ref, ref_meta = read_image(dcm)
    assert ref.shape == (1, 1024, 1024)
    pre = build_transforms("cxr", image_size=(224, 224))
    ref_t = pre({"image": str(dcm)})["image"]
    metas = {}
    for name, path in sources.items():
        out, metas[name] = read_image(path)
        np.testing.assert_array_equal(out, ref, err_msg=name)  # 8-bit: exactly the same pixels
        torch.testing.assert_close(pre({"image": str(path)})["image"], ref_t, atol=1e-5, rtol=0, msg=name)
    for name, meta in metas.items():  # and the same placement of each pixel in the patient
        np.testing.assert_allclose(meta["world_affine"][:3, :2], ref_meta["world_affine"][:3, :2], err_msg=name)


def test_rg1_monochrome1_jpeg2000_as_viewer_nifti(real_data, tmp_path):
    """The issue's case: 1955 rows x 1841 columns from the DICOM and from the NIfTI Slicer would send."""
    import nibabel as nib

    sitk = pytest.importorskip("SimpleITK")
    dcm = need(real_data, RG1)
    itk = viewer_nifti(sitk, dcm, tmp_path / "rg1.nii.gz")
    assert nib.load(str(itk)).shape == (1841, 1955, 1)
    ref, ref_meta = read_image(dcm)  # VOI window, MONOCHROME1 inverted
    out, meta = read_image(itk)
    assert ref.shape == out.shape == (1, 1955, 1841)
    assert ref_meta["inverted"] and not meta["inverted"]
    # ITK (GDCM) writes MONOCHROME1 already inverted (2^BitsStored - 1 - stored): same picture to rounding
    np.testing.assert_allclose(normalised(out[0]), normalised(ref[0]), atol=1e-6)
    pre = build_transforms("cxr", image_size=(224, 224))
    torch.testing.assert_close(pre({"image": str(itk)})["image"], pre({"image": str(dcm)})["image"], atol=1e-5, rtol=0)
    # a NIfTI of the stored MONOCHROME1 values (e.g. written by nibabel from pydicom's pixel_array) carries no
    # photometric interpretation: it comes out in the right orientation but inverted, as documented
    img = nib.load(str(itk))
    stored = pydicom.dcmread(dcm).pixel_array.T[..., None].astype(np.float32)
    raw, _ = read_image(save_nifti(tmp_path / "stored.nii.gz", stored, img.affine))
    assert raw.shape == (1, 1955, 1841)
    np.testing.assert_allclose(normalised(raw[0]), 1.0 - normalised(ref[0]), atol=1e-6)


def test_saliency_style_map_back_onto_the_viewer_nifti(real_data, tmp_path):
    """A map on the reader's grid, written with input_geometry, has the input NIfTI's grid and affine."""
    import nibabel as nib

    sitk = pytest.importorskip("SimpleITK")
    itk = viewer_nifti(sitk, need(real_data, RG1), tmp_path / "rg1.nii.gz")
    raw = ReadImage()(itk)
    heat = np.zeros(raw.shape[1:], np.float32)
    heat[100:300, 1200:1500] = 1.0  # upper right of the displayed image: the patient's left apex
    g = input_geometry(raw, itk)
    nib.save(nib.Nifti1Image(g.to_input(heat), g.affine), str(tmp_path / "map.nii.gz"))
    written, src = nib.load(str(tmp_path / "map.nii.gz")), nib.load(str(itk))
    assert written.shape[:2] == src.shape[:2]
    np.testing.assert_allclose(written.affine, src.affine, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(written.dataobj), heat.T)  # stored like the input: (columns, rows)


@pytest.mark.slow
def test_mr_series_and_its_nifti_conversions_through_the_presets(real_data, tmp_path):
    import nibabel as nib

    sitk = pytest.importorskip("SimpleITK")
    folder = need(real_data, SERIES)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    sitk.WriteImage(reader.Execute(), str(tmp_path / "slicer.nii.gz"))
    img = nib.load(str(tmp_path / "slicer.nii.gz"))
    canon = nib.as_closest_canonical(img)
    assert nib.aff2axcodes(img.affine) != nib.aff2axcodes(canon.affine)  # stored in another voxel order
    sources = {
        "nifti-slicer": tmp_path / "slicer.nii.gz",
        "nifti-nibabel-ras": save_nifti(tmp_path / "ras.nii.gz", np.asarray(canon.dataobj), canon.affine),
    }
    for preset in ("generic", "mr"):
        pre = build_transforms(preset, 3, (48, 48, 48))
        ref = pre({"image": str(folder)})["image"]
        for name, path in sources.items():
            out = pre({"image": str(path)})["image"]
            torch.testing.assert_close(out.as_tensor(), ref.as_tensor(), atol=1e-5, rtol=0, msg=f"{preset} {name}")
            np.testing.assert_allclose(out.affine.numpy(), ref.affine.numpy(), atol=1e-3, err_msg=f"{preset} {name}")

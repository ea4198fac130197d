"""Reader tests on the real public data (skipped where ``MEDCLASS_DATA`` is absent)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from medclass.transforms import ReadImaged, read_image
from tests.conftest import need

CXR = "dicom/chest_xray"
NIH_DCM = f"{CXR}/NIH_CXR14_1.3.6.1.4.1.11129.5.5.110503645592756492463169821050252582267888.dcm"
CR_MONO1 = f"{CXR}/CR-MONO1-10-chest.dcm"
RG1 = f"{CXR}/RG1_J2KI.dcm"


def rows_cols(path):
    ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
    return int(ds.Rows), int(ds.Columns)


def mediastinum_minus_lungs(img2d: np.ndarray) -> float:
    """Mean of the central column band minus the mean of the two lateral (lung) bands, mid-chest rows.

    On a PA chest radiograph shown with bone / soft tissue bright, the mediastinum and spine (centre)
    are brighter than the aerated lungs either side, so this is positive.
    """
    h, w = img2d.shape
    rows = slice(int(0.3 * h), int(0.6 * h))
    centre = img2d[rows, int(0.45 * w) : int(0.55 * w)].mean()
    left = img2d[rows, int(0.2 * w) : int(0.35 * w)].mean()
    right = img2d[rows, int(0.65 * w) : int(0.8 * w)].mean()
    return float(centre - max(left, right))


@pytest.mark.parametrize(
    "rel, photometric", [(NIH_DCM, "MONOCHROME2"), (CR_MONO1, "MONOCHROME1"), (RG1, "MONOCHROME1")]
)
def test_chest_xray_dicoms(real_data, rel, photometric):
    path = need(real_data, rel)
    out, meta = read_image(path)
    assert out.shape == (1, *rows_cols(path)) and out.dtype == np.float32
    assert np.isfinite(out).all() and out.std() > 0
    assert meta["photometric_interpretation"] == photometric
    assert meta["inverted"] == (photometric == "MONOCHROME1")
    assert meta["original_shape"] == rows_cols(path)
    # lungs darker than mediastinum / spine, whatever the stored polarity
    assert mediastinum_minus_lungs(out[0]) > 0.1 * (out.max() - out.min())


def test_known_shapes(real_data):
    assert read_image(need(real_data, NIH_DCM))[0].shape == (1, 1024, 1024)
    assert read_image(need(real_data, CR_MONO1))[0].shape == (1, 440, 440)
    out, meta = read_image(need(real_data, RG1))  # lossy JPEG 2000
    assert out.shape == (1, 1955, 1841)  # rows x columns
    assert meta["windowed"] and meta["window_center"] == 15000.0 and meta["window_width"] == 30000.0
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_monochrome1_stored_values_have_the_opposite_polarity(real_data):
    """Negative control for the region statistic: the raw MONOCHROME1 pixels have bright lungs."""
    for rel in (CR_MONO1, RG1):
        ds = pydicom.dcmread(need(real_data, rel), force=True)
        if "TransferSyntaxUID" not in ds.file_meta:
            ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
        stored = ds.pixel_array.astype(np.float64)
        assert mediastinum_minus_lungs(stored) < 0


def test_acr_nema_file_has_no_preamble(real_data):
    path = need(real_data, CR_MONO1)
    assert path.read_bytes()[128:132] != b"DICM"
    out, meta = read_image(path)
    assert meta["source_format"] == "dicom" and meta["modality"] == "CR"


def test_ct_hounsfield_units(real_data):
    path = need(real_data, "dicom/misc/anon_apct.dcm")  # abdomen CT, big-endian, intercept -1024
    hu, meta = read_image(path, voi=False)
    assert meta["rescaled"] and not meta["windowed"] and meta["modality"] == "CT"
    assert hu.shape == (1, 512, 512)
    air = np.median(hu[0, :20, :])  # air above the patient, inside the field of view
    assert -1030 <= air <= -970
    assert hu.min() >= -1100 and hu.max() > 300  # contrast / bone
    assert meta["spacing"][0] == pytest.approx(0.746, abs=1e-3)
    win, meta = read_image(path)  # soft-tissue window 60 / 400 from the file
    assert meta["windowed"] and meta["window_center"] == 60.0 and meta["window_width"] == 400.0
    assert win.min() == 0.0 and win.max() == 1.0
    np.testing.assert_array_equal(win[hu <= 60 - 200.5], 0.0)


def test_ct_ankle_modality_lut_matches_stored_plus_intercept(real_data):
    path = need(real_data, "dicom/misc/CT-MONO2-16-ankle.dcm")
    hu, meta = read_image(path, voi=False)
    stored = pydicom.dcmread(path).pixel_array.astype(np.float64)
    np.testing.assert_array_equal(hu[0], stored - 1024.0)
    assert hu.min() == -992.0
    assert meta["rescaled"] and meta["original_dtype"] == "int16"


def test_cr_jpeg2000_lossless_tibia(real_data):
    path = need(real_data, "dicom/misc/RG3_J2KR.dcm")  # MONOCHROME1, lossless J2K
    out, meta = read_image(path)
    assert out.shape == (1, *rows_cols(path))
    assert meta["inverted"]
    h, w = out.shape[1:]
    columns = out[0, : h // 2].mean(axis=0)  # column profile of the upper half
    bone = columns[int(0.45 * w) : int(0.55 * w)].mean()  # tibia shaft in the centre
    air = columns.min()  # direct exposure beside the leg: black
    collimated = columns[: int(0.1 * w)].mean()  # shuttered (unexposed) left edge: white
    assert air < 0.2 and bone > air + 0.4 and collimated > 0.9


def test_nih1000_png(real_data):
    folder = need(real_data, "cxr14/NIH1000/train/0_normal")
    path = sorted(folder.glob("*.png"))[0]
    out, meta = read_image(path)
    assert out.shape == (1, 64, 64)
    assert meta["original_channels"] == 3
    from PIL import Image

    rgb = np.asarray(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(out[0], rgb[..., 0])  # grey stored as RGB: exact


def test_pneumoniamnist_arrays(real_data):
    data = np.load(need(real_data, "medmnist/pneumoniamnist.npz"))
    images = data["test_images"][:16]
    for i, img in enumerate(images):
        out = ReadImaged()({"image": img, "id": f"test-{i}"})
        assert out["image"].shape == (1, 28, 28)
        np.testing.assert_array_equal(out["image"][0].numpy(), img)
        assert out["image"].meta["filename_or_obj"] == f"test-{i}"


def test_adrenalmnist3d_arrays(real_data):
    data = np.load(need(real_data, "medmnist/adrenalmnist3d.npz"))
    vol = data["val_images"][0]
    out, _ = read_image(vol, spatial_dims=3)
    assert out.shape == (1, 28, 28, 28)
    with pytest.raises(ValueError, match=r"\(28, 28, 28\)"):
        read_image(vol, spatial_dims=2)


def test_ixi_nifti(real_data):
    folder = need(real_data, "nifti/IXI_T1_ds_n10")
    path = sorted(folder.glob("*.nii*"))[0]
    out, meta = read_image(path, spatial_dims=3)
    assert out.shape == (1, 120, 120, 90)
    assert meta["affine"].shape == (4, 4) and np.isfinite(out).all()
    assert meta["spacing"] == pytest.approx((2.0, 2.0, 2.0), abs=0.05)


# the DICOM series folder and the other volumes: see test_volumes_real.py

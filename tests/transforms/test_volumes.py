"""3D reading on synthetic data: DICOM series folders (sorting, validation), multi-frame DICOM, NIfTI errors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medclass.transforms import ReadImage, build_transforms, read_image, transform_error
from tests.transforms.synth import (
    AXIAL,
    PATIENT_ID,
    PATIENT_NAME,
    lps_voxel_to_world,
    make_dicom,
    make_enhanced_multiframe,
    make_series,
)

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# a sagittal-ish oblique orientation like the real MPRAGE: rows run anterior->posterior, columns downwards
_r, _c = np.array([0.0993, 0.99505, 0.0]), np.array([-0.0139, 0.0014, -0.9999])
SAGITTAL = tuple(np.concatenate([_r / np.linalg.norm(_r), _c / np.linalg.norm(_c)]).tolist())


def coded_volume(n=6, rows=5, cols=4):
    """``(n, rows, cols)`` int16 with value ``100 * slice + 10 * row + col`` (every voxel tells where it was)."""
    k, r, c = np.meshgrid(np.arange(n), np.arange(rows), np.arange(cols), indexing="ij")
    return (100 * k + 10 * r + c).astype(np.int16)


def world(affine, ijk):
    return (affine @ np.array([*ijk, 1.0]))[:3]


# ---------------------------------------------------------------------------------------------
# series folders: order and geometry


@pytest.mark.parametrize("orientation", [AXIAL, SAGITTAL], ids=["axial", "oblique"])
def test_series_sorted_by_position_not_name_or_instance_number(tmp_path, orientation):
    vol = coded_volume()
    n = len(vol)
    rng = np.random.default_rng(1)
    perm = rng.permutation(n)
    # file names and InstanceNumbers both disagree with the spatial order
    names = [f"IM{int(p):04d}" + (".dcm" if p % 2 else "") for p in perm]
    numbers = [int(x) + 1 for x in rng.permutation(n)]
    normal = np.cross(np.asarray(orientation[:3]), np.asarray(orientation[3:]))
    origin = np.array([-40.0, -30.0, 10.0])
    positions = origin + np.arange(n)[:, None] * 2.5 * normal  # slice k at k * 2.5 mm along the normal
    # write slice k under a shuffled name, and in reverse spatial order on disk
    make_series(
        tmp_path / "study", vol[::-1], positions=positions[::-1], orientation=orientation,
        names=names, instance_numbers=numbers,
    )
    out, meta = read_image(tmp_path / "study", spatial_dims=3)
    assert out.shape == (1, 4, 5, n) and out.dtype == np.float32  # (columns, rows, slices)
    np.testing.assert_array_equal(out[0], vol.transpose(2, 1, 0))  # slices in ascending position
    assert meta["source_format"] == "dicom" and meta["modality"] == "CT"
    assert meta["spacing"] == pytest.approx((0.6, 0.8, 2.5))
    assert meta["filename_or_obj"] == str(tmp_path / "study")
    assert PATIENT_NAME not in str(meta) and PATIENT_ID not in str(meta)
    # the affine maps voxel (i=column, j=row, k) to the DICOM position of that pixel, in RAS
    affine = meta["affine"]
    for i, j, k in [(0, 0, 0), (3, 4, 5), (2, 1, 3)]:
        lps = lps_voxel_to_world(positions[k], orientation, (0.8, 0.6), i, j)
        np.testing.assert_allclose(world(affine, (i, j, k)), (LPS_TO_RAS[:3, :3] @ lps), atol=1e-6)
    assert np.linalg.det(affine[:3, :3]) * np.linalg.det(LPS_TO_RAS[:3, :3]) > 0  # right-handed in LPS


def test_series_per_slice_rescale_to_hounsfield(tmp_path):
    vol = (coded_volume(4) + 1000).astype(np.uint16)
    rescale = [(1.0, -1024.0), (1.0, -1000.0), (2.0, -2048.0), (0.5, -500.0)]
    make_series(tmp_path / "s", vol, rescale=rescale)
    out, meta = read_image(tmp_path / "s", spatial_dims=3, voi=False)
    expected = np.stack([vol[k] * s + b for k, (s, b) in enumerate(rescale)])
    np.testing.assert_array_equal(out[0], expected.transpose(2, 1, 0))
    assert meta["rescaled"] and not meta["windowed"]


def test_series_folder_needs_spatial_dims_3(tmp_path):
    make_series(tmp_path / "s", coded_volume(3))
    with pytest.raises(ValueError, match=r"s: DICOM series folders.*spatial_dims=3"):
        read_image(tmp_path / "s", spatial_dims=2)


# ---------------------------------------------------------------------------------------------
# series folders: validation


def positions_along_z(zs, origin=(-40.0, -30.0)):
    return np.array([[origin[0], origin[1], z] for z in zs], dtype=np.float64)


def test_series_duplicate_position(tmp_path):
    make_series(tmp_path / "dup", coded_volume(5), positions=positions_along_z([0, 2.5, 5, 5, 7.5]))
    with pytest.raises(ValueError, match=r"dup: duplicated slice positions.*slice_002\.dcm and slice_003\.dcm"):
        read_image(tmp_path / "dup", spatial_dims=3)


def test_series_missing_slice(tmp_path):
    paths = make_series(tmp_path / "gap", coded_volume(6))
    paths[3].unlink()
    with pytest.raises(
        ValueError, match=r"gap: missing slices: a gap of 5\.000 mm between slice_002\.dcm and slice_004\.dcm"
    ):
        read_image(tmp_path / "gap", spatial_dims=3)


def test_series_uneven_spacing(tmp_path):
    make_series(tmp_path / "uneven", coded_volume(6), positions=positions_along_z([0, 2, 4, 6.6, 8.6, 10.6]))
    with pytest.raises(ValueError, match=r"uneven: uneven slice spacing.*2\.600 mm between slice_002.*slice_003"):
        read_image(tmp_path / "uneven", spatial_dims=3)
    # within tolerance (rounding of the stored positions): fine
    make_series(tmp_path / "ok", coded_volume(4), positions=positions_along_z([0, 2.001, 3.999, 6.0]))
    assert read_image(tmp_path / "ok", spatial_dims=3)[0].shape == (1, 4, 5, 4)


def test_series_stray_files_skipped_with_warning(tmp_path, caplog):
    folder = tmp_path / "study"
    make_series(folder, coded_volume(4))
    (folder / "notes.txt").write_text("scanned on a Tuesday\n")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(range(256)) * 8)
    (folder / "README").write_text("# series export\nDo not edit.\n")
    (folder / "thumbs").mkdir()
    (folder / "._slice_000.dcm").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(64))
    no_image = Dataset()  # DICOM magic but no image, like a DICOMDIR or a structured report
    no_image.SOPClassUID = "1.2.840.10008.1.3.10"
    no_image.SOPInstanceUID = generate_uid()
    no_image.file_meta = FileMetaDataset()
    no_image.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    no_image.file_meta.MediaStorageSOPClassUID = no_image.SOPClassUID
    no_image.file_meta.MediaStorageSOPInstanceUID = no_image.SOPInstanceUID
    no_image.save_as(folder / "DICOMDIR", enforce_file_format=True)
    with caplog.at_level("WARNING", logger="medclass.transforms.io"):
        out, _ = read_image(folder, spatial_dims=3)
    np.testing.assert_array_equal(out[0], coded_volume(4).transpose(2, 1, 0))
    for stray in ("notes.txt", ".DS_Store", "README", "._slice_000.dcm"):
        assert f"skipping {stray}: not a DICOM file" in caplog.text
    assert "skipping DICOMDIR: a DICOM file without an image" in caplog.text
    assert "skipping subfolder thumbs" in caplog.text
    assert str(folder) in caplog.text


def test_series_mixed_series(tmp_path):
    folder = tmp_path / "mixed"
    make_series(folder, coded_volume(4))
    make_series(folder, coded_volume(2), names=["other_0.dcm", "other_1.dcm"])
    with pytest.raises(ValueError, match=r"mixed: mixed series: the folder holds 2 series.*other_0\.dcm"):
        read_image(folder, spatial_dims=3)


def test_series_size_and_orientation_mismatch(tmp_path):
    folder = tmp_path / "sizes"
    uid = "1.2.3.4.5"
    make_series(folder, coded_volume(3), series_uid=uid)
    make_series(folder, coded_volume(1, 6, 4), positions=positions_along_z([7.5]), names=["big.dcm"], series_uid=uid)
    with pytest.raises(ValueError, match=r"sizes: slices of different size.*6x4: 1 file\(s\), e.g\. big\.dcm"):
        read_image(folder, spatial_dims=3)
    folder = tmp_path / "orient"
    make_series(folder, coded_volume(3), series_uid=uid)
    make_series(
        folder, coded_volume(1), positions=positions_along_z([7.5]), orientation=(1, 0, 0, 0, 0, -1),
        names=["coronal.dcm"], series_uid=uid,
    )
    with pytest.raises(ValueError, match=r"orient: slices of different orientation:.*coronal\.dcm"):
        read_image(folder, spatial_dims=3)


def test_series_broken_slice_and_degenerate_folders(tmp_path):
    folder = tmp_path / "broken"
    paths = make_series(folder, coded_volume(3, 16, 16))
    raw = paths[1].read_bytes()
    paths[1].write_bytes(raw[: len(raw) - 100])  # truncated pixel data
    with pytest.raises(ValueError, match=r"broken: cannot read slice slice_001\.dcm"):
        read_image(folder, spatial_dims=3)
    one = tmp_path / "one"
    make_series(one, coded_volume(1))
    with pytest.raises(ValueError, match=r"one: the series has a single slice \(slice_000\.dcm, 5x4\): a 2D image"):
        read_image(one, spatial_dims=3)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("x")
    with pytest.raises(ValueError, match=r"empty: no DICOM image files in the folder"):
        read_image(empty, spatial_dims=3)


# ---------------------------------------------------------------------------------------------
# single-file multi-frame DICOM


def test_enhanced_multiframe_sorted_with_per_frame_rescale(tmp_path):
    vol = (coded_volume(5) + 1000).astype(np.uint16)
    normal = np.cross(np.asarray(SAGITTAL[:3]), np.asarray(SAGITTAL[3:]))
    positions = np.array([5.0, -3.0, 20.0]) + np.arange(5)[:, None] * 1.25 * normal
    order = np.array([3, 0, 4, 1, 2])  # frames stored out of spatial order
    rescale = [(1.0, -1024.0 + 10 * f) for f in range(5)]
    path = make_enhanced_multiframe(
        tmp_path / "enh.dcm", vol[order], positions[order], orientation=SAGITTAL, rescale=[rescale[o] for o in order]
    )
    out, meta = read_image(path, spatial_dims=3, voi=False)
    hu = np.stack([vol[k] * s + b for k, (s, b) in enumerate(rescale)])
    np.testing.assert_array_equal(out[0], hu.transpose(2, 1, 0))
    assert meta["spacing"] == pytest.approx((0.6, 0.8, 1.25))
    for i, j, k in [(0, 0, 0), (3, 4, 4)]:
        lps = lps_voxel_to_world(positions[k], SAGITTAL, (0.8, 0.6), i, j)
        np.testing.assert_allclose(world(meta["affine"], (i, j, k)), LPS_TO_RAS[:3, :3] @ lps, atol=1e-6)
    # the same validation as a series
    bad = positions.copy()
    bad[2] = bad[1]
    make_enhanced_multiframe(tmp_path / "dup.dcm", vol, bad)
    with pytest.raises(ValueError, match=r"dup\.dcm: duplicated frame positions.*frame 2 and frame 3"):
        read_image(tmp_path / "dup.dcm", spatial_dims=3)
    # a folder holding just this file reads it
    (tmp_path / "mf").mkdir()
    shutil.copy(path, tmp_path / "mf" / "enh.dcm")
    np.testing.assert_array_equal(read_image(tmp_path / "mf", spatial_dims=3, voi=False)[0], out)


# ---------------------------------------------------------------------------------------------
# wrong inputs for a 3D pipeline


def test_2d_images_into_3d_rejected(tmp_path):
    import nibabel as nib

    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "x.png")
    make_dicom(tmp_path / "slice.dcm", np.zeros((16, 16), np.uint16), modality="CT")
    nib.save(nib.Nifti1Image(np.zeros((16, 16), np.float32), np.eye(4)), tmp_path / "flat.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 1), np.float32), np.eye(4)), tmp_path / "thin.nii.gz")
    cases = [
        (tmp_path / "x.png", r"x\.png: PNG image of shape \(16, 16\) is a 2D image"),
        (tmp_path / "slice.dcm", r"slice\.dcm: single-frame DICOM of shape \(16, 16\) is a 2D image"),
        (tmp_path / "flat.nii.gz", r"flat\.nii\.gz: NIfTI image of shape \(16, 16\) is a 2D image"),
        (tmp_path / "thin.nii.gz", r"thin\.nii\.gz: volume of shape \(16, 16, 1\) has a single slice.*2D image"),
    ]
    for path, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            read_image(path, spatial_dims=3)
    for arr, pattern in [
        (np.zeros((28, 28)), r"case-1: got a 2D image of shape \(28, 28\)"),
        (np.zeros((1, 28, 28)), r"case-1: volume of shape \(1, 28, 28\) has a single slice along axis 0"),
    ]:
        with pytest.raises(ValueError, match=pattern):
            read_image(arr, spatial_dims=3, name="case-1")
    # through a 3D pipeline: MONAI wraps the error, the cause names the file
    t = build_transforms("ct", spatial_dims=3, image_size=16)
    with pytest.raises(RuntimeError) as info:
        t({"image": str(tmp_path / "slice.dcm"), "id": "s"})
    err = transform_error(info.value)
    assert isinstance(err, ValueError) and "slice.dcm" in str(err) and "2D image" in str(err)


def test_4d_and_non_finite_volumes_rejected(tmp_path):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((8, 8, 6, 3), np.float32), np.eye(4)), tmp_path / "dwi.nii.gz")
    with pytest.raises(ValueError, match=r"dwi\.nii\.gz: NIfTI image of shape \(8, 8, 6, 3\) is a 4D image"):
        read_image(tmp_path / "dwi.nii.gz", spatial_dims=3)
    with pytest.raises(ValueError, match=r"case-2: got an array of shape \(3, 8, 8, 6\)"):
        read_image(np.zeros((3, 8, 8, 6)), spatial_dims=3, name="case-2")
    for bad, name in ((np.nan, "nan"), (np.inf, "inf")):
        v = np.ones((8, 8, 6), np.float32)
        v[2, 3, 4] = bad
        nib.save(nib.Nifti1Image(v, np.eye(4)), tmp_path / f"{name}.nii.gz")
        with pytest.raises(ValueError, match=rf"{name}\.nii\.gz: image has 1 NaN/Inf"):
            read_image(tmp_path / f"{name}.nii.gz", spatial_dims=3)
    t = build_transforms("mr", spatial_dims=3, image_size=8)
    with pytest.raises(RuntimeError) as info:
        t({"image": str(tmp_path / "nan.nii.gz")})
    assert "nan.nii.gz: image has 1 NaN/Inf" in str(transform_error(info.value))


def test_read_image_metatensor_carries_dicom_affine(tmp_path):
    make_series(tmp_path / "s", coded_volume(3))
    t = ReadImage(spatial_dims=3)(tmp_path / "s")
    np.testing.assert_allclose(t.affine.numpy(), read_image(tmp_path / "s", spatial_dims=3)[1]["affine"])
    # axial LPS -> RAS: x and y flip sign
    assert np.sign(np.diag(t.affine.numpy())[:3]).tolist() == [-1.0, -1.0, 1.0]

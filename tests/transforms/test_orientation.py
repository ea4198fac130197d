"""2D orientation: the same image as DICOM, PNG, NIfTI / NRRD / MHA (any storage order, with a matching affine) gives
the same array and preprocessed tensor; a DICOM with ImageOrientationPatient follows the same rule; and the way back
from the reader's array to the input's own grid (also in 3D)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from medclass.transforms import ReadImage, build_transforms, read_image
from tests.transforms.synth import lps_voxel_to_world, make_dicom

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"  # GDCM (SimpleITK) takes PixelSpacing from CT objects
SPACING = (0.5, 0.25)  # row spacing, column spacing (mm)
ORIGIN = (10.0, -20.0, 30.0)  # LPS

# ImageOrientationPatient (row direction, column direction; LPS) of planes a viewer shows as stored
PLANES = {
    "axial": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),  # = no orientation (radiographs): rows -> P, columns -> L
    "coronal": (1.0, 0.0, 0.0, 0.0, 0.0, -1.0),  # rows -> I (feet), columns -> L
    "sagittal": (0.0, 1.0, 0.0, 0.0, 0.0, -1.0),  # rows -> I, columns -> P
    "oblique": (np.cos(0.3), np.sin(0.3), 0.0, -np.sin(0.3), np.cos(0.3), 0.0),  # axial turned 17 degrees
}


def coded(rows=6, cols=9, dtype=np.uint16):
    """``(rows, cols)`` with a distinct value per pixel (every pixel tells where it was; uint8 wraps at 256)."""
    step = 1 if np.dtype(dtype).itemsize == 1 else 7
    return (np.arange(rows * cols).reshape(rows, cols) * step + 3).astype(dtype)


def plane_affine(orientation=PLANES["axial"], spacing=SPACING, position=ORIGIN, thickness=1.0):
    """RAS affine of a DICOM's stored ``(row, column)`` grid (index 0 moves along the column direction)."""
    r, c = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    a = np.eye(4)
    a[:3, 0], a[:3, 1], a[:3, 2], a[:3, 3] = c * spacing[0], r * spacing[1], np.cross(r, c) * thickness, position
    return LPS_TO_RAS @ a


def flip_axis(data, affine, k):
    """Store ``data`` reversed along axis ``k``; the affine changes so every voxel keeps its world position."""
    f = np.eye(4)
    f[k, k], f[k, 3] = -1.0, data.shape[k] - 1
    return np.flip(data, k).copy(), affine @ f


def swap_axes(data, affine):
    """Store ``data`` transposed (axis 0 <-> 1), affine to match."""
    return np.swapaxes(data, 0, 1).copy(), affine @ np.eye(4)[:, [1, 0, 2, 3]]


def stored(a, affine, transpose, flip0, flip1, singleton=False):
    data = a
    if transpose:
        data, affine = swap_axes(data, affine)
    if flip0:
        data, affine = flip_axis(data, affine, 0)
    if flip1:
        data, affine = flip_axis(data, affine, 1)
    if singleton:
        data = data[..., None]
    return data, affine


def save_nifti(path, data, affine):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.asarray(data), np.asarray(affine, dtype=np.float64)), str(path))
    return path


VARIANTS = list(itertools.product([False, True], repeat=3))
VARIANT_IDS = [f"{'T' if t else 'n'}{'F' if f0 else 'n'}{'F' if f1 else 'n'}" for t, f0, f1 in VARIANTS]


# ---------------------------------------------------------------------------------------------
# 2D NIfTI: the file's affine decides, whatever the storage order


@pytest.mark.parametrize("plane", list(PLANES))
@pytest.mark.parametrize("transpose, flip0, flip1", VARIANTS, ids=VARIANT_IDS)
def test_nifti_2d_any_storage_order_reads_in_display_order(tmp_path, plane, transpose, flip0, flip1):
    a = coded()
    display_affine = plane_affine(PLANES[plane])
    data, affine = stored(a, display_affine, transpose, flip0, flip1, singleton=transpose)
    path = save_nifti(tmp_path / "x.nii.gz", data, affine)
    out, meta = read_image(path)
    assert out.shape == (1, 6, 9)
    np.testing.assert_array_equal(out[0], a)
    assert meta["spacing"] == pytest.approx(SPACING)
    np.testing.assert_allclose(meta["world_affine"], display_affine, atol=1e-5)
    t = ReadImage()(path)
    np.testing.assert_allclose(np.diag(t.affine.numpy()), [*SPACING, 1.0, 1.0], atol=1e-6)  # in-plane pixel affine


def test_nifti_2d_written_like_itk_is_transposed_back(tmp_path):
    """ITK / SimpleITK / 3D Slicer store a radiograph as (columns, rows, 1) with an LPS identity direction."""
    a = coded(30, 50)
    path = save_nifti(tmp_path / "itk.nii.gz", a.T[..., None], np.diag([-0.25, -0.5, 1.0, 1.0]))
    out, meta = read_image(path)
    assert out.shape == (1, 30, 50)  # rows x columns, as the DICOM
    np.testing.assert_array_equal(out[0], a)
    assert meta["original_shape"] == (50, 30) and meta["spacing"] == (0.5, 0.25)


def test_nifti_2d_singleton_axis_first(tmp_path):
    a = coded()
    data, affine = swap_axes(a, plane_affine(PLANES["coronal"]))
    affine = affine[:, [2, 0, 1, 3]]  # the file's axes: (normal, columns, rows)
    path = save_nifti(tmp_path / "x.nii.gz", data[None], affine)
    out, meta = read_image(path)
    np.testing.assert_array_equal(out[0], a)
    np.testing.assert_allclose(meta["world_affine"], plane_affine(PLANES["coronal"]), atol=1e-6)
    with pytest.raises(ValueError, match=r"x\.nii\.gz.*\(6, 9, 2\)"):
        read_image(save_nifti(tmp_path / "x.nii.gz", np.zeros((6, 9, 2), np.float32), np.eye(4)))


def test_nifti_2d_zero_third_axis_is_replaced_by_the_normal(tmp_path):
    """A 2D NIfTI whose length-1 axis has no direction: the pixels are still placed, and mapped back."""
    import nibabel as nib

    from medclass.transforms import input_geometry

    a = coded()
    data, affine = swap_axes(a, plane_affine())
    affine[:3, 2] = 0.0
    img = nib.Nifti1Image(data[..., None].astype(np.float32), None)
    img.set_sform(affine, code=2)
    nib.save(img, str(tmp_path / "thin.nii.gz"))
    raw = ReadImage()(tmp_path / "thin.nii.gz")
    np.testing.assert_array_equal(raw[0].numpy(), a)
    np.testing.assert_allclose(raw.meta["world_affine"][:3, :2], plane_affine()[:3, :2])
    assert abs(np.linalg.det(raw.meta["source_affine"][:3, :3])) > 0
    np.testing.assert_array_equal(input_geometry(raw).to_input(raw[0]), data)


def test_nifti_2d_degenerate_affine_is_an_error(tmp_path):
    import nibabel as nib

    affine = np.eye(4)
    affine[:3, 1] = 0.0  # a column of zeros: nibabel only accepts it as an sform
    img = nib.Nifti1Image(coded().astype(np.float32), None)
    img.set_sform(affine, code=2)
    nib.save(img, str(tmp_path / "flat.nii.gz"))
    path = tmp_path / "flat.nii.gz"
    with pytest.raises(ValueError, match=r"flat\.nii\.gz: .*affine"):
        read_image(path)


# ---------------------------------------------------------------------------------------------
# DICOM with ImageOrientationPatient: the same rule


@pytest.mark.parametrize(
    "iop, expected",
    [
        ((1, 0, 0, 0, 1, 0), lambda a: a),
        ((-1, 0, 0, 0, 1, 0), lambda a: a[:, ::-1]),  # stored mirrored: columns run to the patient's right
        ((1, 0, 0, 0, -1, 0), lambda a: a[::-1]),  # stored upside down: rows run anterior
        ((0, 1, 0, 1, 0, 0), lambda a: a.T),  # stored transposed: rows run left, columns posterior
        ((-1, 0, 0, 0, 0, -1), lambda a: a[:, ::-1]),  # coronal, mirrored
        ((1, 0, 0, 0, 0, 1), lambda a: a[::-1]),  # coronal, head at the bottom
        ((0, -1, 0, 0, 0, -1), lambda a: a[:, ::-1]),  # sagittal, columns run anterior
    ],
    ids=["standard", "mirrored", "upside-down", "transposed", "coronal-mirrored", "coronal-flipped", "sagittal-AP"],
)
def test_dicom_with_orientation_is_reoriented(tmp_path, iop, expected):
    a = coded()
    path = make_dicom(tmp_path / "o.dcm", a, pixel_spacing=SPACING, orientation=iop, position=ORIGIN)
    out, meta = read_image(path)
    np.testing.assert_array_equal(out[0], expected(a))
    assert meta["original_shape"] == (6, 9)
    # every displayed pixel sits where the DICOM puts it: world_affine @ (row, col) = DICOM position of its pixel
    rows, cols = np.nonzero(np.ones(out.shape[1:], bool))
    for r, c in zip(rows, cols):
        j, i = np.argwhere(a == out[0, r, c])[0]
        lps = lps_voxel_to_world(np.asarray(ORIGIN), iop, SPACING, i, j)
        np.testing.assert_allclose((meta["world_affine"] @ [r, c, 0, 1])[:3], (LPS_TO_RAS[:3, :3] @ lps), atol=1e-6)


def test_dicom_without_orientation_keeps_stored_order(tmp_path):
    a = coded()
    out, meta = read_image(make_dicom(tmp_path / "dx.dcm", a, pixel_spacing=SPACING))
    np.testing.assert_array_equal(out[0], a)
    np.testing.assert_allclose(meta["world_affine"], plane_affine(position=(0, 0, 0)))


# ---------------------------------------------------------------------------------------------
# the same image in every format


def test_png_dicom_nifti_same_array_and_same_preprocessed_tensor(tmp_path):
    a = coded(40, 56, dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "x.png")
    sources = {"png": tmp_path / "x.png", "dicom": make_dicom(tmp_path / "x.dcm", a)}
    for (t, f0, f1), name in zip(VARIANTS, VARIANT_IDS):
        data, affine = stored(a, plane_affine(spacing=(1.0, 1.0), position=(0, 0, 0)), t, f0, f1, singleton=True)
        sources[f"nifti-{name}"] = save_nifti(tmp_path / f"x_{name}.nii.gz", data, affine)
    pre = build_transforms("cxr", image_size=(32, 32))
    ref = pre({"image": str(sources["dicom"])})["image"]
    for name, path in sources.items():
        out, _ = read_image(path)
        np.testing.assert_array_equal(out[0], a, err_msg=name)
        torch.testing.assert_close(pre({"image": str(path)})["image"], ref, msg=name)


@pytest.mark.parametrize("iop", [None, PLANES["coronal"], (-1, 0, 0, 0, 1, 0), (0, 1, 0, 1, 0, 0)],
                         ids=["none", "coronal", "mirrored", "transposed"])
def test_dicom_and_its_simpleitk_conversions_agree(tmp_path, iop):
    """A viewer's conversion of the DICOM (SimpleITK, as 3D Slicer writes it) reads as the DICOM does."""
    sitk = pytest.importorskip("SimpleITK")
    a = coded(30, 50)
    path = make_dicom(tmp_path / "x.dcm", a, pixel_spacing=SPACING, orientation=iop,
                      position=None if iop is None else ORIGIN, sop_class=CT_IMAGE, modality="CT")
    ref, ref_meta = read_image(path, voi=False)
    img = sitk.ReadImage(str(path))
    for ext in (".nii.gz", ".nrrd", ".mha"):
        out_path = tmp_path / f"x{ext}"
        sitk.WriteImage(img, str(out_path))
        out, meta = read_image(out_path)
        np.testing.assert_array_equal(out, ref, err_msg=ext)
        assert meta["spacing"] == pytest.approx(ref_meta["spacing"])  # display order: (columns, rows) if transposed
        np.testing.assert_allclose(meta["world_affine"], ref_meta["world_affine"], atol=1e-4, err_msg=ext)


# ---------------------------------------------------------------------------------------------
# back to the input's grid


@pytest.mark.parametrize("transpose, flip0, flip1", VARIANTS, ids=VARIANT_IDS)
def test_input_geometry_puts_a_map_back_on_the_nifti_grid(tmp_path, transpose, flip0, flip1):
    import nibabel as nib

    from medclass.transforms import input_geometry

    a = coded()
    data, affine = stored(a, plane_affine(PLANES["coronal"]), transpose, flip0, flip1, singleton=True)
    path = save_nifti(tmp_path / "x.nii.gz", data, affine)
    raw = ReadImage()(path)
    g = input_geometry(raw, path)
    np.testing.assert_array_equal(g.to_input(raw[0]), data[..., 0])
    np.testing.assert_array_equal(g.to_input(raw), data[None, ..., 0])  # channel-first too
    np.testing.assert_allclose(g.affine, affine, atol=1e-6)
    assert g.shape == data.shape[:2]
    np.testing.assert_array_equal(g.from_input(data[..., 0]), a)
    # a map computed on the reader's grid, written with the helper, lands on the input and reads back the same
    heat = raw[0].numpy() / raw.max().item()
    nib.save(nib.Nifti1Image(g.to_input(heat), g.affine), str(tmp_path / "map.nii.gz"))
    back, meta = read_image(tmp_path / "map.nii.gz")
    np.testing.assert_allclose(back[0], heat, atol=1e-6)
    np.testing.assert_allclose(meta["world_affine"], raw.meta["world_affine"], atol=1e-6)


def test_input_geometry_of_dicom_png_and_arrays(tmp_path):
    from medclass.transforms import input_geometry

    a = coded()
    iop = (0, 1, 0, 1, 0, 0)  # stored transposed
    dcm = ReadImage()(make_dicom(tmp_path / "t.dcm", a, pixel_spacing=SPACING, orientation=iop, position=ORIGIN))
    g = input_geometry(dcm)
    np.testing.assert_array_equal(g.to_input(dcm[0]), a)  # the DICOM's stored (rows, columns)
    np.testing.assert_allclose(g.affine, plane_affine(iop), atol=1e-6)
    a8 = coded(dtype=np.uint8)
    Image.fromarray(a8).save(tmp_path / "x.png")
    png = ReadImage()(tmp_path / "x.png")
    gp = input_geometry(png, tmp_path / "x.png")
    np.testing.assert_array_equal(gp.to_input(png[0]), a8)
    np.testing.assert_allclose(gp.affine, plane_affine(spacing=(1.0, 1.0), position=(0, 0, 0)))
    arr = ReadImage()(a, name="item-1")
    np.testing.assert_array_equal(input_geometry(arr).to_input(arr[0]), a)


def test_input_geometry_3d_after_orientation(tmp_path):
    from monai.transforms import Orientation

    from medclass.transforms import input_geometry

    v = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    affine = np.array([[0, 0, -2.0, 10], [-1.5, 0, 0, 20], [0, 3.0, 0, -5], [0, 0, 0, 1]])
    path = save_nifti(tmp_path / "v.nii.gz", v, affine)
    raw = ReadImage(spatial_dims=3)(path)
    np.testing.assert_allclose(raw.meta["world_affine"], affine)
    np.testing.assert_allclose(raw.meta["source_affine"], affine)
    ras = Orientation(axcodes="RAS")(raw)
    assert ras.shape[1:] != raw.shape[1:]
    g = input_geometry(ras, path)
    np.testing.assert_array_equal(g.to_input(ras[0]), v)
    np.testing.assert_allclose(g.affine, affine)
    np.testing.assert_array_equal(g.from_input(v), ras[0].numpy())


def test_input_geometry_errors(tmp_path):
    from monai.transforms import Resize

    from medclass.transforms import input_geometry

    a = coded()
    path = save_nifti(tmp_path / "x.nii.gz", a.T, np.diag([-0.25, -0.5, 1.0, 1.0]))
    raw = ReadImage()(path)
    with pytest.raises(TypeError, match="MetaTensor"):
        input_geometry(raw.as_tensor())
    with pytest.raises(ValueError, match=r"x\.nii\.gz.*grid"):
        input_geometry(Resize((12, 18))(raw), path)
    with pytest.raises(ValueError, match=r"other\.nii\.gz.*x\.nii\.gz"):
        input_geometry(raw, tmp_path / "other.nii.gz")
    g = input_geometry(raw)
    with pytest.raises(ValueError, match=r"shape \(5, 5\).*\(6, 9\)"):
        g.to_input(np.zeros((5, 5)))


def test_mixed_2d_sources_collate_with_their_geometry(tmp_path):
    from monai.data import DataLoader, Dataset

    a = coded(40, 56, dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "x.png")
    items = [
        {"image": str(make_dicom(tmp_path / "x.dcm", a, orientation=PLANES["coronal"])), "id": "dcm"},
        {"image": str(tmp_path / "x.png"), "id": "png"},
        {"image": str(save_nifti(tmp_path / "x.nii.gz", a.T[..., None], np.diag([-1.0, -1.0, 1.0, 1.0]))), "id": "nii"},
        {"image": a, "id": "array"},
    ]
    loader = DataLoader(Dataset(items, build_transforms("cxr", image_size=(32, 32))), batch_size=4)
    batch = next(iter(loader))
    img = batch["image"]
    assert img.shape == (4, 1, 32, 32)
    torch.testing.assert_close(img[1:], img[:1].expand(3, -1, -1, -1))  # one picture, four sources
    assert tuple(img.meta["world_affine"].shape) == (4, 4, 4)
    assert tuple(img.meta["source_affine"].shape) == (4, 4, 4)

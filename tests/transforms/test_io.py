"""Reader tests on synthetic files: every PIL mode, DICOM features, arrays, volumes and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from medclass.transforms import META_KEYS, ReadImage, ReadImaged, read_image
from tests.transforms.synth import PATIENT_ID, PATIENT_NAME, make_dicom

LUMA = np.array([0.299, 0.587, 0.114])


def ramp(h=30, w=50, scale=1, dtype=np.uint16):
    """``(h, w)`` with a distinct value per pixel, increasing along rows then columns."""
    return (np.arange(h * w).reshape(h, w) * scale).astype(dtype)


def check_meta(meta, name):
    assert tuple(meta) == META_KEYS or set(meta) == set(META_KEYS)
    assert meta["filename_or_obj"] == str(name)


# ---------------------------------------------------------------------------------------------
# PIL


@pytest.mark.parametrize("ext", ["png", "bmp", "tif"])
def test_pil_L_exact_and_row_column_order(tmp_path, ext):
    a = ramp(30, 50, dtype=np.uint8) % 251
    a[2, 40] = 255  # marker near the top right: row 2, column 40
    path = tmp_path / f"img.{ext}"
    Image.fromarray(a, mode="L").save(path)
    out, meta = read_image(path)
    assert out.shape == (1, 30, 50) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], a.astype(np.float32))
    assert out[0, 2, 40] == 255
    check_meta(meta, path)
    assert meta["original_shape"] == (30, 50) and meta["original_channels"] == 1
    assert meta["source_format"].startswith("pil:")


def test_pil_16bit_png_full_precision(tmp_path):
    a = ramp(30, 50, scale=43, dtype=np.uint16)  # up to 64457: needs all 16 bits
    assert a.max() > 60000
    path = tmp_path / "x16.png"
    Image.fromarray(a).save(path)
    assert Image.open(path).mode.startswith("I;16")
    out, meta = read_image(path)
    np.testing.assert_array_equal(out[0], a.astype(np.float32))
    assert meta["original_dtype"] == "uint16"


def test_pil_mode_I_and_F_tiff(tmp_path):
    a = ramp(30, 50, scale=1000, dtype=np.int32) - 700_000  # signed 32-bit values
    Image.fromarray(a).save(tmp_path / "i.tif")
    assert Image.open(tmp_path / "i.tif").mode == "I"
    out, _ = read_image(tmp_path / "i.tif")
    np.testing.assert_array_equal(out[0], a.astype(np.float32))

    f = np.linspace(-3.5, 7.25, 30 * 50, dtype=np.float32).reshape(30, 50)
    Image.fromarray(f).save(tmp_path / "f.tif")
    assert Image.open(tmp_path / "f.tif").mode == "F"
    out, _ = read_image(tmp_path / "f.tif")
    np.testing.assert_array_equal(out[0], f)


def test_pil_rgb_luminance_and_grey_rgb_exact(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "c.png")
    out, meta = read_image(tmp_path / "c.png")
    np.testing.assert_allclose(out[0], rgb.astype(np.float64) @ LUMA, atol=1e-4)
    assert meta["original_channels"] == 3
    grey = np.repeat(ramp(20, 24, dtype=np.uint8)[..., None], 3, axis=2)
    Image.fromarray(grey, mode="RGB").save(tmp_path / "g.png")
    out, _ = read_image(tmp_path / "g.png")
    np.testing.assert_array_equal(out[0], grey[..., 0].astype(np.float32))


def test_pil_alpha_dropped(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (20, 24, 1), dtype=np.uint8)
    Image.fromarray(np.concatenate([rgb, alpha], 2), mode="RGBA").save(tmp_path / "a.png")
    out, meta = read_image(tmp_path / "a.png")
    np.testing.assert_allclose(out[0], rgb.astype(np.float64) @ LUMA, atol=1e-4)
    assert meta["original_channels"] == 4

    grey = ramp(20, 24, dtype=np.uint8)
    Image.fromarray(np.stack([grey, alpha[..., 0]], 2), mode="LA").save(tmp_path / "la.png")
    out, meta = read_image(tmp_path / "la.png")
    np.testing.assert_array_equal(out[0], grey.astype(np.float32))
    assert meta["original_channels"] == 2


def test_pil_palette_and_bilevel(tmp_path):
    idx = (ramp(20, 24, dtype=np.uint8) % 4).astype(np.uint8)
    palette = [10, 10, 10, 200, 0, 0, 0, 200, 0, 255, 255, 255] + [0] * (256 * 3 - 12)
    im = Image.fromarray(idx, mode="L").convert("P")
    im.putpalette(palette)
    im.putdata(idx.ravel().tolist())
    im.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    out, _ = read_image(tmp_path / "p.png")
    colours = np.array(palette[:12], dtype=np.float64).reshape(4, 3) @ LUMA
    np.testing.assert_allclose(out[0], colours[idx], atol=1e-3)

    bits = (ramp(20, 24, dtype=np.uint8) % 2).astype(bool)
    Image.fromarray(bits).save(tmp_path / "b.png")
    assert Image.open(tmp_path / "b.png").mode == "1"
    out, _ = read_image(tmp_path / "b.png")
    np.testing.assert_array_equal(out[0], np.where(bits, 255.0, 0.0))


def test_pil_jpeg(tmp_path):
    a = np.tile(np.linspace(0, 255, 64), (48, 1)).astype(np.uint8)
    Image.fromarray(a).save(tmp_path / "x.jpg", quality=95)
    out, meta = read_image(tmp_path / "x.jpg")
    assert out.shape == (1, 48, 64)
    assert np.abs(out[0] - a).mean() < 2.0
    assert meta["source_format"] == "pil:JPEG"


def test_pil_multipage_tiff_rejected(tmp_path):
    frames = [Image.fromarray(ramp(10, 12, dtype=np.uint8)) for _ in range(3)]
    path = tmp_path / "stack.tif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with pytest.raises(ValueError, match=r"stack\.tif.*3 frames"):
        read_image(path)


def test_truncated_png(tmp_path):
    rng = np.random.default_rng(2)
    good = tmp_path / "good.png"
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(good)
    bad = tmp_path / "truncated.png"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"truncated\.png: cannot read image \("):
        read_image(bad)


def test_missing_empty_and_garbage_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.png"):
        read_image(tmp_path / "nowhere.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.png: cannot read image"):
        read_image(tmp_path / "empty.png")
    (tmp_path / "notes.txt").write_text("not an image at all\n" * 20)
    with pytest.raises(ValueError, match=r"notes\.txt: cannot read image"):
        read_image(tmp_path / "notes.txt")
    (tmp_path / "junk.dcm").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match=r"junk\.dcm: cannot read image"):
        read_image(tmp_path / "junk.dcm")


def test_pil_2d_into_3d_pipeline_rejected(tmp_path):
    Image.fromarray(ramp(10, 12, dtype=np.uint8)).save(tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"x\.png.*\(10, 12\).*spatial_dims=3"):
        read_image(tmp_path / "x.png", spatial_dims=3)


# ---------------------------------------------------------------------------------------------
# DICOM


def test_dicom_plain_values_and_orientation(tmp_path):
    a = ramp(30, 50, scale=2, dtype=np.uint16)
    a[2, 40] = 4000
    path = make_dicom(tmp_path / "plain.dcm", a, pixel_spacing=(0.5, 0.25))
    out, meta = read_image(path)
    assert out.shape == (1, 30, 50)
    np.testing.assert_array_equal(out[0], a.astype(np.float32))
    check_meta(meta, path)
    assert meta["photometric_interpretation"] == "MONOCHROME2"
    assert meta["original_shape"] == (30, 50)
    assert not meta["inverted"] and not meta["windowed"] and not meta["rescaled"]
    assert meta["spacing"] == (0.5, 0.25)
    assert meta["modality"] == "CR"


def test_dicom_meta_has_no_patient_identifiers(tmp_path):
    path = make_dicom(tmp_path / "phi.dcm", ramp(8, 8), window=(30.0, 40.0))
    t = ReadImage()(path)
    text = repr(dict(t.meta)) + repr(read_image(path)[1])
    for secret in (PATIENT_NAME, PATIENT_ID, "Doe", "19700101", "20240102", "General Hospital"):
        assert secret not in text


def test_dicom_modality_lut(tmp_path):
    a = ramp(16, 16, dtype=np.int16)
    path = make_dicom(tmp_path / "ct.dcm", a, slope=2.0, intercept=-1024.0, modality="CT")
    out, meta = read_image(path, voi=False)
    np.testing.assert_allclose(out[0], a * 2.0 - 1024.0)
    assert meta["rescaled"] and not meta["windowed"]


def test_dicom_window_center_width(tmp_path):
    a = ramp(40, 64, scale=2, dtype=np.uint16)  # 0 .. 5118
    path = make_dicom(tmp_path / "w.dcm", a, window=(1000.0, 501.0))
    out, meta = read_image(path)
    x = a.astype(np.float64)
    expected = np.clip((x - 999.5) / 500.0 + 0.5, 0, 1)  # DICOM LINEAR window
    np.testing.assert_allclose(out[0], expected, atol=1e-6)
    assert out.min() == 0.0 and out.max() == 1.0
    assert meta["windowed"] and meta["window_center"] == 1000.0 and meta["window_width"] == 501.0
    # voi=False keeps the raw values
    raw, meta = read_image(path, voi=False)
    np.testing.assert_array_equal(raw[0], x)
    assert not meta["windowed"] and np.isnan(meta["window_center"])


def test_dicom_voi_lut_sequence(tmp_path):
    a = ramp(16, 16, scale=10, dtype=np.uint16)  # 0 .. 2550
    lut = (4095 - np.arange(4096)) * 16  # 16-bit decreasing LUT
    path = make_dicom(tmp_path / "lut.dcm", a, bits_stored=12, voi_lut=lut)
    out, meta = read_image(path)
    np.testing.assert_allclose(out[0], lut[a] / 65535.0, atol=1e-6)
    assert meta["windowed"]


def test_dicom_monochrome1_inverted_windowed(tmp_path):
    a = np.tile(np.arange(0, 1024, 16, dtype=np.uint16), (8, 1))  # stored values increase to the right
    path = make_dicom(tmp_path / "m1.dcm", a, photometric="MONOCHROME1", bits_stored=10, window=(512.0, 1024.0))
    out, meta = read_image(path)
    assert meta["inverted"] and meta["photometric_interpretation"] == "MONOCHROME1"
    row = out[0, 0]
    assert np.all(np.diff(row) < 0)  # high stored value (white in MONOCHROME1 = low X-ray) -> dark
    expected = 1.0 - np.clip((a[0] - 511.5) / 1023.0 + 0.5, 0, 1)
    np.testing.assert_allclose(row, expected, atol=1e-6)
    # the same pixels as MONOCHROME2 are not inverted
    path2 = make_dicom(tmp_path / "m2.dcm", a, photometric="MONOCHROME2", bits_stored=10, window=(512.0, 1024.0))
    out2, meta2 = read_image(path2)
    assert not meta2["inverted"]
    np.testing.assert_allclose(out + out2, 1.0, atol=1e-6)


def test_dicom_monochrome1_inverted_without_window(tmp_path):
    a = np.tile(np.arange(0, 1024, 16, dtype=np.uint16), (8, 1))
    path = make_dicom(tmp_path / "m1.dcm", a, photometric="MONOCHROME1", bits_stored=10)
    out, meta = read_image(path)
    assert meta["inverted"] and not meta["windowed"]
    np.testing.assert_array_equal(out[0], 1023.0 - a)  # inverted within the 10-bit stored range


def test_dicom_presentation_lut_inverse(tmp_path):
    a = ramp(8, 8, dtype=np.uint8)
    path = make_dicom(tmp_path / "inv.dcm", a, presentation_lut_shape="INVERSE")
    out, meta = read_image(path)
    assert meta["inverted"]
    np.testing.assert_array_equal(out[0], 255.0 - a)


def test_dicom_rgb_to_luminance(tmp_path):
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    path = make_dicom(tmp_path / "rgb.dcm", rgb, photometric="RGB")
    out, meta = read_image(path)
    assert out.shape == (1, 12, 10) and meta["original_channels"] == 3
    np.testing.assert_allclose(out[0], rgb.astype(np.float64) @ LUMA, atol=1e-4)


def test_dicom_multiframe(tmp_path):
    frames = np.stack([ramp(12, 10) + 100 * k for k in range(4)]).astype(np.uint16)
    path = make_dicom(tmp_path / "mf.dcm", frames)
    with pytest.raises(ValueError, match=r"mf\.dcm: multi-frame DICOM with 4 frames.*\(4, 12, 10\)"):
        read_image(path)
    out, meta = read_image(path, spatial_dims=3)
    # a DICOM volume is (columns, rows, frames) like a series; without geometry: frames in stored order
    assert out.shape == (1, 10, 12, 4)
    np.testing.assert_array_equal(out[0], frames.transpose(2, 1, 0))
    assert meta["original_shape"] == (10, 12, 4)
    single = make_dicom(tmp_path / "single.dcm", ramp(12, 10))
    with pytest.raises(ValueError, match=r"single\.dcm.*2D image.*spatial_dims=3"):
        read_image(single, spatial_dims=3)


@pytest.mark.parametrize("name", ["acr_nema.dcm", "IM0001"])
def test_dicom_without_preamble(tmp_path, name):
    a = ramp(12, 10, scale=7)
    path = make_dicom(tmp_path / name, a, file_format=False)
    assert path.read_bytes()[128:132] != b"DICM"
    out, meta = read_image(path)
    np.testing.assert_array_equal(out[0], a.astype(np.float32))
    assert meta["source_format"] == "dicom"


def test_dicom_truncated(tmp_path):
    good = make_dicom(tmp_path / "good.dcm", ramp(64, 64, scale=3))
    raw = good.read_bytes()
    for n, name in ((len(raw) - 4000, "cut_pixels.dcm"), (400, "cut_header.dcm")):
        bad = tmp_path / name
        bad.write_bytes(raw[:n])
        with pytest.raises(ValueError, match=rf"{name}: cannot read image \("):
            read_image(bad)


def test_dicom_invalid_window_width_is_skipped_with_warning(tmp_path, caplog):
    a = ramp(8, 8)
    path = make_dicom(tmp_path / "badw.dcm", a, window=(10.0, 0.5))
    with caplog.at_level("WARNING", logger="medclass.transforms.io"):
        out, meta = read_image(path)
    assert "badw.dcm: invalid window width 0.5" in caplog.text
    assert not meta["windowed"]
    np.testing.assert_array_equal(out[0], a)


# ---------------------------------------------------------------------------------------------
# arrays


def test_array_2d_layouts():
    a = ramp(28, 28, dtype=np.uint8)
    for src in (a, a[..., None], a[None], torch.from_numpy(a)):
        out, meta = read_image(src, name="case-1")
        assert out.shape == (1, 28, 28) and out.dtype == np.float32
        np.testing.assert_array_equal(out[0], a)
        assert meta["filename_or_obj"] == "case-1" and meta["source_format"] == "array"
    rgb = np.stack([a, a // 2, 255 - a], axis=-1)
    out, meta = read_image(rgb)
    np.testing.assert_allclose(out[0], rgb.astype(np.float64) @ LUMA, atol=1e-4)
    assert meta["original_channels"] == 3 and meta["filename_or_obj"] == "<array>"
    rgba = np.concatenate([rgb, np.zeros_like(a)[..., None]], axis=-1)
    np.testing.assert_array_equal(read_image(rgba)[0], out)


def test_array_3d():
    v = np.arange(5 * 6 * 7, dtype=np.uint8).reshape(5, 6, 7)
    for src in (v, v[None]):
        out, meta = read_image(src, spatial_dims=3)
        assert out.shape == (1, 5, 6, 7)
        np.testing.assert_array_equal(out[0], v)
        assert meta["original_shape"] == (5, 6, 7)


@pytest.mark.parametrize(
    "shape, spatial_dims, pattern",
    [
        ((28, 28, 2), 2, r"case-9: unexpected channel count 2.*\(28, 28, 2\)"),
        ((64, 64, 5), 2, r"case-9: unexpected channel count 5.*\(64, 64, 5\)"),
        ((28, 28, 28), 2, r"case-9.*\(28, 28, 28\).*3D volume.*spatial_dims=2"),
        ((2, 28, 28, 28), 2, r"case-9.*\(2, 28, 28, 28\).*spatial_dims=2"),
        ((28, 28), 3, r"case-9.*2D image of shape \(28, 28\).*spatial_dims=3"),
        ((2, 8, 8, 8), 3, r"case-9.*\(2, 8, 8, 8\).*spatial_dims=3"),
        ((28,), 2, r"case-9.*\(28,\)"),
    ],
)
def test_array_wrong_shapes(shape, spatial_dims, pattern):
    with pytest.raises(ValueError, match=pattern):
        read_image(np.zeros(shape, np.uint8), spatial_dims=spatial_dims, name="case-9")


def test_array_non_finite_and_bad_types():
    a = np.ones((8, 8), np.float32)
    a[3, 3] = np.nan
    with pytest.raises(ValueError, match=r"case-7: image has 1 NaN/Inf"):
        read_image(a, name="case-7")
    a[3, 3] = np.inf
    with pytest.raises(ValueError, match="NaN/Inf"):
        read_image(a)
    with pytest.raises(TypeError, match="unsupported pixel data type"):
        read_image(np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(TypeError, match="file path or a numpy array"):
        read_image(42)
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
        read_image(np.zeros((4, 4)), spatial_dims=4)
    with pytest.raises(ValueError, match="empty image"):
        read_image(np.zeros((0, 4)))


def test_non_finite_tiff(tmp_path):
    f = np.ones((8, 8), np.float32)
    f[0, 0] = np.inf
    Image.fromarray(f).save(tmp_path / "inf.tif")
    with pytest.raises(ValueError, match=r"inf\.tif: image has 1 NaN/Inf"):
        read_image(tmp_path / "inf.tif")


def test_npy_file(tmp_path):
    v = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    np.save(tmp_path / "v.npy", v)
    out, meta = read_image(tmp_path / "v.npy", spatial_dims=3)
    np.testing.assert_array_equal(out[0], v)
    assert meta["source_format"] == "npy" and meta["filename_or_obj"] == str(tmp_path / "v.npy")


# ---------------------------------------------------------------------------------------------
# NIfTI


def test_nifti_volume_keeps_affine(tmp_path):
    import nibabel as nib

    v = np.arange(6 * 7 * 8, dtype=np.int16).reshape(6, 7, 8)
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    affine[:3, 3] = (-10, 5, 7)
    nib.save(nib.Nifti1Image(v, affine), tmp_path / "v.nii.gz")
    out, meta = read_image(tmp_path / "v.nii.gz", spatial_dims=3)
    assert out.shape == (1, 6, 7, 8)
    np.testing.assert_array_equal(out[0], v)
    np.testing.assert_allclose(meta["affine"], affine)
    assert meta["spacing"] == (2.0, 3.0, 4.0)
    t = ReadImage(spatial_dims=3)(tmp_path / "v.nii.gz")
    np.testing.assert_allclose(t.affine.numpy(), affine)
    # a 4D series is not a single volume; a single slice works for 2D
    nib.save(nib.Nifti1Image(np.zeros((6, 7, 8, 2), np.float32), np.eye(4)), tmp_path / "t.nii")
    with pytest.raises(ValueError, match=r"t\.nii: NIfTI image of shape \(6, 7, 8, 2\)"):
        read_image(tmp_path / "t.nii", spatial_dims=3)
    nib.save(nib.Nifti1Image(v[..., :1], affine), tmp_path / "s.nii")
    out, meta = read_image(tmp_path / "s.nii", spatial_dims=2)
    # in display order (see medclass.transforms.orientation): i runs to the right and j anterior, so rows are
    # j reversed (anterior at the top) and columns i reversed (the patient's right on the left)
    np.testing.assert_array_equal(out[0], v[..., 0].T[::-1, ::-1])
    assert meta["original_shape"] == (6, 7) and meta["spacing"] == (3.0, 2.0)
    with pytest.raises(ValueError, match=r"v\.nii\.gz.*\(6, 7, 8\)"):
        read_image(tmp_path / "v.nii.gz", spatial_dims=2)


# ---------------------------------------------------------------------------------------------
# transforms


def test_read_image_transform_metatensor(tmp_path):
    from monai.data import MetaTensor

    path = make_dicom(tmp_path / "sp.dcm", ramp(12, 10), pixel_spacing=(0.5, 0.25))
    t = ReadImage()(path)
    assert isinstance(t, MetaTensor) and t.shape == (1, 12, 10) and t.dtype == torch.float32
    assert t.meta["filename_or_obj"] == str(path)
    np.testing.assert_allclose(np.diag(t.affine.numpy()), [0.5, 0.25, 1.0, 1.0])


def test_read_imaged_uses_id_and_passes_fields(tmp_path):
    a = ramp(28, 28, dtype=np.uint8)
    extra = {"nested": [1, 2]}
    label = np.array([1.0, np.nan], np.float32)
    item = {"image": a, "label": label, "id": "pm-17", "patient_id": "p3", "extra": extra}
    out = ReadImaged(keys=("image",))(item)
    assert out["image"].meta["filename_or_obj"] == "pm-17"
    assert out["image"].shape == (1, 28, 28)
    assert out["id"] == "pm-17" and out["patient_id"] == "p3"
    assert out["extra"] is extra and out["label"] is label
    assert item["image"] is a  # the input dict is not modified
    bad = dict(item, image=np.zeros((28, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="pm-17"):
        ReadImaged()(bad)
    Image.fromarray(a).save(tmp_path / "x.png")
    out = ReadImaged()({"image": str(tmp_path / "x.png"), "id": "other"})
    assert out["image"].meta["filename_or_obj"] == str(tmp_path / "x.png")

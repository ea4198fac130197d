"""The image readers: one module per source, each shaped like MONAI's ImageReader (works alone and in LoadImage),
and read_image picking the same reader for a file as before the split."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from monai.data import ImageReader
from monai.transforms import LoadImage
from PIL import Image

from medclass.transforms import read_image
from medclass.transforms.readers import (
    META_KEYS,
    ArrayReader,
    DicomReader,
    DicomSeriesReader,
    ItkReader,
    NiftiReader,
    NpyReader,
    PILImageReader,
    reader_for,
)
from tests.transforms.synth import make_dicom, make_series


def _files(tmp_path):
    a = (np.arange(12 * 10).reshape(12, 10) * 7).astype(np.uint16)
    png = tmp_path / "a.png"
    Image.fromarray(a.astype(np.uint8)).save(png)
    dcm = make_dicom(tmp_path / "a.dcm", a)
    nii = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((6, 7, 8)).astype(np.float32), np.diag([1.0, 2, 3, 1])),
             str(nii))
    npy = tmp_path / "a.npy"
    np.save(npy, a)
    series = tmp_path / "series"
    make_series(series, (np.arange(4 * 6 * 5).reshape(4, 6, 5) % 50).astype(np.int16))
    return {"png": png, "dcm": dcm, "nii": nii, "npy": npy, "series": series}


def test_reader_for_picks_one_reader_per_source(tmp_path):
    f = _files(tmp_path)
    assert isinstance(reader_for(f["png"]), PILImageReader)
    assert isinstance(reader_for(f["dcm"]), DicomReader)
    assert isinstance(reader_for(f["nii"], 3), NiftiReader)
    assert isinstance(reader_for(tmp_path / "x.nrrd"), ItkReader)
    assert isinstance(reader_for(f["npy"]), NpyReader)
    assert isinstance(reader_for(f["series"], 3), DicomSeriesReader)
    nosuffix = tmp_path / "IM0001"
    nosuffix.write_bytes(f["dcm"].read_bytes())
    assert isinstance(reader_for(nosuffix), DicomReader)  # the DICM magic


@pytest.mark.parametrize("key, dims, reader", [
    ("png", 2, PILImageReader), ("dcm", 2, DicomReader), ("nii", 3, NiftiReader), ("npy", 2, NpyReader),
    ("series", 3, DicomSeriesReader),
])
def test_each_reader_alone_gives_what_read_image_gives(tmp_path, key, dims, reader):
    path = _files(tmp_path)[key]
    r = reader(dims)
    assert isinstance(r, ImageReader)
    out, meta = r.get_data(r.read(path))
    want, want_meta = read_image(path, spatial_dims=dims)
    np.testing.assert_array_equal(out, want)
    assert set(META_KEYS) <= set(meta) and set(meta) == set(want_meta)
    assert out.dtype == np.float32 and out.shape[0] == 1


def test_readers_work_in_monai_load_image(tmp_path):
    f = _files(tmp_path)
    for key, dims, reader in (("png", 2, PILImageReader), ("dcm", 2, DicomReader), ("nii", 3, NiftiReader)):
        img = LoadImage(reader=reader(dims), image_only=True)(str(f[key]))
        np.testing.assert_array_equal(img.numpy(), read_image(f[key], spatial_dims=dims)[0])
    vol = LoadImage(reader=NiftiReader(3), image_only=True)(str(f["nii"]))
    np.testing.assert_allclose(vol.affine.numpy(), np.diag([1.0, 2, 3, 1]))


def test_array_reader_names_arrays_in_errors():
    r = ArrayReader(2, name="case_7")
    with pytest.raises(ValueError, match="case_7: .*NaN"):
        r.get_data(r.read(np.full((4, 4), np.nan)))
    out, meta = r.get_data(r.read(np.ones((4, 5), np.uint8)))
    assert out.shape == (1, 4, 5) and meta["filename_or_obj"] == "case_7" and meta["source_format"] == "array"

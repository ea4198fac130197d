"""Label-free image lists for inference: CSV, JSON, npz; and the bundle's inference input resolution."""

import json

import numpy as np
import pytest

from medclass.data import load_image_list
from medclass.workflow import inference_items
from tests.data.conftest import write_csv


def test_csv_image_column_only(images):
    csv_path = write_csv(images / "list.csv", ["Image Index", "note"], [["img/a.png", "x"], ["img/b.png", ""]])
    items = load_image_list(csv_path)
    assert [it["id"] for it in items] == ["a", "b"]
    assert items[0]["image"] == str(images / "img" / "a.png")


def test_csv_missing_image_names_row(images):
    csv_path = write_csv(images / "list.csv", ["image"], [["img/a.png"], ["img/zzz.png"]])
    with pytest.raises(FileNotFoundError, match=r"row 3: .*zzz.png"):
        load_image_list(csv_path)


def test_csv_without_image_column(images):
    csv_path = write_csv(images / "list.csv", ["foo"], [["img/a.png"]])
    with pytest.raises(ValueError, match="no image column"):
        load_image_list(csv_path)


def test_json_splits_and_plain_list(images):
    doc = {"training": [{"image": "img/a.png", "label": [1]}], "test": [{"image": "img/c.png"}]}
    (images / "d.json").write_text(json.dumps(doc))
    assert [it["id"] for it in load_image_list(images / "d.json")] == ["a", "c"]
    (images / "l.json").write_text(json.dumps(["img/d.png", {"image": "img/e.png", "id": "E"}]))
    assert [it["id"] for it in load_image_list(images / "l.json")] == ["d", "E"]


def test_npz_all_splits(tmp_path):
    arrays = {f"{s}_images": np.zeros((n, 28, 28), np.uint8) for s, n in (("train", 3), ("val", 1), ("test", 2))}
    arrays.update({f"{s}_labels": np.zeros((n, 1), np.uint8) for s, n in (("train", 3), ("val", 1), ("test", 2))})
    np.savez(tmp_path / "x.npz", **arrays)
    items = load_image_list(tmp_path / "x.npz")
    assert len(items) == 6 and items[0]["image"].shape == (28, 28)


def test_inference_items_sources(images):
    assert [it["id"] for it in inference_items(str(images / "img"))] == list("abcdef")
    assert [it["id"] for it in inference_items(str(images / "img" / "c.png"))] == ["c"]
    assert [it["id"] for it in inference_items([str(images / "img" / "b.png")])] == ["b"]
    with pytest.raises(FileNotFoundError, match="nothere"):
        inference_items(str(images / "nothere"))
    (images / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        inference_items(str(images / "empty"))


def test_3d_inference_items_group_dicom_series(tmp_path):
    studies = tmp_path / "studies"
    series = studies / "patient_a_series"
    series.mkdir(parents=True)
    for i in range(3):
        (series / f"{i:03d}.dcm").write_bytes(b"x")
    (series / "notes.txt").write_text("stray")  # skipped by the series reader, not a study of its own
    (studies / "vol.nii.gz").write_bytes(b"x")
    lone = studies / "mf" / "multiframe.dcm"
    lone.parent.mkdir()
    lone.write_bytes(b"x")
    items = inference_items(str(studies), spatial_dims=3)
    assert [(it["id"], it["image"]) for it in items] == [
        ("vol", str(studies / "vol.nii.gz")), ("multiframe", str(lone)), ("patient_a_series", str(series))]
    # the same folder given to a 2D bundle lists the image files themselves
    assert len(inference_items(str(studies), spatial_dims=2)) == 5
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no volumes"):
        inference_items(str(tmp_path / "empty"), spatial_dims=3)


def test_npz_and_folder_sources_ignore_an_absent_dataset_dir(tmp_path, images):
    from medclass.data import load_datalist

    arrays = {f"{s}_images": np.zeros((2, 28, 28), np.uint8) for s in ("train", "val", "test")}
    arrays.update({f"{s}_labels": np.array([[0], [1]], np.uint8) for s in ("train", "val", "test")})
    np.savez(tmp_path / "y.npz", **arrays)
    assert load_datalist(tmp_path / "y.npz", dataset_dir=tmp_path / "absent").task == "binary"
    csv_path = write_csv(images / "l.csv", ["image", "x"], [["img/a.png", 1]])
    with pytest.raises(FileNotFoundError, match="absent is not a folder"):
        load_datalist(csv_path, ["x"], dataset_dir=tmp_path / "absent")


def test_inference_ids_stay_unique_when_stems_collide(tmp_path):
    from tests.data.conftest import write_png

    write_png(tmp_path / "site_a" / "scan.png")
    write_png(tmp_path / "site_b" / "scan.png")
    ids = [it["id"] for it in inference_items(str(tmp_path))]
    assert len(set(ids)) == 2 and all(i.endswith("scan") for i in ids)
    with pytest.raises(FileNotFoundError, match="gone.png"):
        inference_items([str(tmp_path / "site_a" / "scan.png"), str(tmp_path / "gone.png")])

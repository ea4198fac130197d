"""One reader per source behind one interface, all returning the same records; one list of image extensions and
one discovery function for class folders and inference folders."""

import json

import numpy as np
import pytest

from medclass.data import (
    SOURCES,
    CsvSource,
    DatalistSource,
    FolderSource,
    JsonSource,
    MedmnistSource,
    NihCsvSource,
    find_images,
    load_datalist,
)
from medclass.vocab import IMAGE_EXTENSIONS
from medclass.workflow import inference_items
from tests.data.conftest import write_csv, write_png


def _same_records(datalist):
    return {(it["id"], it["image"], tuple(np.nan_to_num(it["label"], nan=-9).tolist())) for it in datalist.all_items()}


def test_every_source_gives_the_same_records(images):
    img = images / "img"
    by_csv = CsvSource(write_csv(images / "l.csv", ["image", "Effusion", "Mass"],
                                 [["img/a.png", 1, 0], ["img/b.png", 0, ""]])).read(["Effusion", "Mass"])
    by_nih = NihCsvSource(write_csv(images / "nih.csv", ["Image Index", "Finding Labels", "Patient ID"],
                                    [["img/a.png", "Effusion", "p1"], ["img/b.png", "No Finding", "p2"]])
                          ).read(["Effusion", "Mass"])
    (images / "d.json").write_text(json.dumps({"all": [{"image": "img/a.png", "label": [1, 0]},
                                                       {"image": "img/b.png", "label": [0, None]}],
                                               "label_names": ["Effusion", "Mass"]}))
    by_json = JsonSource(images / "d.json").read()
    for data in (by_csv, by_nih, by_json):
        assert data.label_names == ["Effusion", "Mass"] and data.task == "multilabel"
        assert set(data.splits) == {"all"}
        for it in data.all_items():
            assert it["label"].dtype == np.float32 and it["label"].shape == (2,)
    assert _same_records(by_csv) == _same_records(by_json)
    assert _same_records(by_nih) == {("a", str(img / "a.png"), (1.0, 0.0)), ("b", str(img / "b.png"), (0.0, 0.0))}
    assert by_nih.all_items()[0]["patient_id"] == "p1" and by_nih.all_items()[0]["Finding Labels"] == "Effusion"


def test_the_nih_reader_reads_the_findings_column_even_beside_label_columns(images):
    path = write_csv(images / "n.csv", ["Image Index", "Finding Labels", "Mass"], [["img/a.png", "Mass", 0]])
    assert load_datalist(path, ["Mass"]).all_items()[0]["label"].tolist() == [0.0]  # the generic CSV: the column
    assert NihCsvSource(path).read(["Mass"]).all_items()[0]["label"].tolist() == [1.0]  # NIH: the findings
    with pytest.raises(ValueError, match="no findings column"):
        NihCsvSource(write_csv(images / "x.csv", ["image", "Mass"], [["img/a.png", 1]])).read()


def test_sources_share_one_interface_and_load_datalist_picks_by_accepts(images, tmp_path):
    assert all(issubclass(s, DatalistSource) for s in SOURCES)
    assert FolderSource.accepts(images) and not CsvSource.accepts(images)
    assert CsvSource.accepts("x.TSV") and JsonSource.accepts("x.json") and MedmnistSource.accepts("y.npz")
    with pytest.raises(TypeError, match="do not apply to a JSON source"):
        JsonSource(tmp_path / "d.json", image_key="x")
    with pytest.raises(ValueError, match="not an image list"):
        FolderSource(images).images()


def test_one_extension_list_for_class_folders_and_inference_folders(tmp_path):
    from PIL import Image

    root = tmp_path / "tree"
    write_png(root / "a" / "x.png")
    (root / "b").mkdir()
    Image.fromarray(np.full((8, 8), 50, np.uint8)).save(root / "b" / "y.bmp")
    Image.fromarray(np.full((8, 8), 60, np.uint8)).save(root / "b" / "z.tif")
    (root / "b" / "notes.txt").write_text("not an image")
    (root / "b" / ".hidden.png").write_bytes(b"")
    for ext in (".bmp", ".tif", ".nrrd", ".mha", ".png", ".dcm", ".nii.gz"):
        assert ext in IMAGE_EXTENSIONS
    found = find_images(root)
    assert [p.rsplit("/", 1)[1] for p in found] == ["x.png", "y.bmp", "z.tif"]
    data = load_datalist(root)  # class folders: the same files
    assert sorted(it["image"] for it in data.all_items()) == sorted(found)
    assert [it["image"] for it in inference_items(str(root))] == found  # an inference folder: the same files

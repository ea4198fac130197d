"""CSV label files: per-label columns, findings column, class column, errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from medclass.data import CXR14_LABELS, Datalist, load_datalist
from tests.data.conftest import write_csv, write_png


def test_per_label_columns_with_blanks_and_uncertain(images: Path):
    csv_path = write_csv(
        images / "labels.csv",
        ["image", "patient_id", "Mass", "Nodule", "age"],
        [
            ["img/a.png", "p1", 1, 0, 41],
            ["img/b.png", "p1", "", "1", 42],
            ["img/c.png", "p2", "-1", "0.0", ""],
        ],
    )
    dl = load_datalist(csv_path, ["Mass", "Nodule"])
    assert isinstance(dl, Datalist)
    assert dl.task == "multilabel" and dl.label_names == ["Mass", "Nodule"]
    assert list(dl.splits) == ["all"]
    items = dl["all"]
    assert [i["id"] for i in items] == ["a", "b", "c"]
    assert items[0]["image"] == str((images / "img" / "a.png").resolve())
    assert items[0]["label"].dtype == np.float32 and items[0]["label"].tolist() == [1.0, 0.0]
    assert math.isnan(items[1]["label"][0]) and items[1]["label"][1] == 1.0
    assert math.isnan(items[2]["label"][0]) and items[2]["label"][1] == 0.0
    assert items[0]["patient_id"] == "p1" and items[2]["patient_id"] == "p2"
    assert items[0]["age"] == "41" and items[2]["age"] == ""
    assert "Mass" not in items[0]  # label columns live in the vector only


def test_single_label_is_binary_and_task_override(images: Path):
    csv_path = write_csv(images / "l.csv", ["path", "pneumonia"], [["img/a.png", 1], ["img/b.png", 0]])
    dl = load_datalist(csv_path, ["pneumonia"])
    assert dl.task == "binary" and dl.num_labels == 1
    assert [i["label"].tolist() for i in dl["all"]] == [[1.0], [0.0]]
    with pytest.raises(ValueError, match="binary.*one label"):
        load_datalist(write_csv(images / "m.csv", ["path", "x", "y"], [["img/a.png", 1, 0]]), ["x", "y"], task="binary")


def test_multiclass_columns_must_be_one_hot(images: Path):
    path = write_csv(images / "mc.csv", ["image", "cat", "dog"], [["img/a.png", 1, 0], ["img/b.png", 1, 1]])
    with pytest.raises(ValueError, match=r"mc\.csv row 3.*not one-hot"):
        load_datalist(path, ["cat", "dog"], task="multiclass")


def test_findings_column_chestxray14_format(images: Path):
    csv_path = write_csv(
        images / "Data_Entry.csv",
        ["Image Index", "Finding Labels", "Patient ID", "Patient Age"],
        [
            ["a.png", "Cardiomegaly|Effusion", "7", "58"],
            ["b.png", "No Finding", "7", "59"],
            ["c.png", "Hernia", "8", "60"],
        ],
    )
    dl = load_datalist(csv_path, dataset_dir=images / "img")
    assert dl.label_names == list(CXR14_LABELS) and dl.task == "multilabel"
    a, b, c = dl["all"]
    assert a["label"].sum() == 2 and a["label"][CXR14_LABELS.index("Effusion")] == 1
    assert b["label"].tolist() == [0.0] * 14
    assert c["label"][CXR14_LABELS.index("Hernia")] == 1
    assert a["patient_id"] == "7" and a["Patient Age"] == "58" and a["Finding Labels"] == "Cardiomegaly|Effusion"
    assert a["image"] == str((images / "img" / "a.png").resolve())
    # a subset of the findings: the others are ignored
    sub = load_datalist(csv_path, ["Effusion", "Hernia"], dataset_dir=images / "img")
    assert [i["label"].tolist() for i in sub["all"]] == [[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]


def test_findings_unknown_name_names_row(images: Path):
    csv_path = write_csv(
        images / "f.csv", ["image", "findings"], [["img/a.png", "Mass"], ["img/b.png", "Mass|Covid"]]
    )
    with pytest.raises(ValueError, match=r"f\.csv row 3.*'Covid'"):
        load_datalist(csv_path)


def test_class_column(images: Path):
    csv_path = write_csv(
        images / "c.csv", ["file", "label"], [["img/a.png", "Hand"], ["img/b.png", "CXR"], ["img/c.png", "Hand"]]
    )
    dl = load_datalist(csv_path)
    assert dl.task == "multiclass" and dl.label_names == ["CXR", "Hand"]
    assert [i["label"].tolist() for i in dl["all"]] == [[0, 1], [1, 0], [0, 1]]
    with pytest.raises(ValueError, match=r"c\.csv row 3.*unknown class 'CXR'"):
        load_datalist(csv_path, ["Hand", "HeadCT"])


def test_split_column(images: Path):
    csv_path = write_csv(
        images / "s.csv",
        ["image", "Mass", "split"],
        [["img/a.png", 1, "train"], ["img/b.png", 0, "valid"], ["img/c.png", 0, "TEST"], ["img/d.png", 1, "training"]],
    )
    dl = load_datalist(csv_path, ["Mass"])
    assert dl.sizes() == {"training": 2, "validation": 1, "test": 1}
    assert [i["id"] for i in dl["training"]] == ["a", "d"]
    assert "split" not in dl["training"][0]


def test_bad_split_value_names_row(images: Path):
    rows = [["img/a.png", 1, "train"], ["img/b.png", 0, "dev"]]
    csv_path = write_csv(images / "s.csv", ["image", "Mass", "split"], rows)
    with pytest.raises(ValueError, match=r"s\.csv row 3.*'dev'"):
        load_datalist(csv_path, ["Mass"])


def test_unknown_label_names_list_columns(images: Path):
    csv_path = write_csv(images / "l.csv", ["image", "Mass", "age"], [["img/a.png", 1, 3]])
    with pytest.raises(ValueError, match=r"l\.csv.*\['Nodule'\].*columns present: 'image', 'Mass', 'age'"):
        load_datalist(csv_path, ["Mass", "Nodule"])


def test_no_label_columns_found(images: Path):
    csv_path = write_csv(images / "l.csv", ["image", "age"], [["img/a.png", 3]])
    with pytest.raises(ValueError, match=r"l\.csv.*label_names.*'image', 'age'"):
        load_datalist(csv_path)


def test_bad_label_value_names_row_and_column(images: Path):
    rows = [["img/a.png", 1], ["img/b.png", 0], ["img/c.png", "yes"]]
    csv_path = write_csv(images / "l.csv", ["image", "Mass"], rows)
    with pytest.raises(ValueError, match=r"l\.csv row 4, column 'Mass'.*'yes'"):
        load_datalist(csv_path, ["Mass"])


def test_missing_image_file_names_row_and_path(images: Path):
    csv_path = write_csv(images / "l.csv", ["image", "Mass"], [["img/a.png", 1], ["img/zzz.png", 0]])
    with pytest.raises(FileNotFoundError, match=r"l\.csv.*row 3: .*zzz\.png"):
        load_datalist(csv_path, ["Mass"])
    dl = load_datalist(csv_path, ["Mass"], check_files=False)
    assert dl["all"][1]["image"].endswith("zzz.png")


def test_missing_image_column_lists_columns(images: Path):
    csv_path = write_csv(images / "l.csv", ["picture", "Mass"], [["img/a.png", 1]])
    with pytest.raises(ValueError, match=r"l\.csv: no image column.*'picture', 'Mass'"):
        load_datalist(csv_path, ["Mass"])
    dl = load_datalist(csv_path, ["Mass"], image_key="picture")
    assert dl["all"][0]["id"] == "a"


def test_empty_csv_and_header_only(tmp_path: Path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"empty\.csv.*empty"):
        load_datalist(empty, ["Mass"])
    header_only = write_csv(tmp_path / "header.csv", ["image", "Mass"], [])
    with pytest.raises(ValueError, match=r"header\.csv.*no data rows"):
        load_datalist(header_only, ["Mass"])


def test_empty_image_cell_and_long_row_name_row(images: Path):
    path = write_csv(images / "l.csv", ["image", "Mass"], [["img/a.png", 1], ["", 0]])
    with pytest.raises(ValueError, match=r"l\.csv row 3: empty image path"):
        load_datalist(path, ["Mass"])
    path = write_csv(images / "k.csv", ["image", "Mass"], [["img/a.png", 1, "extra"]])
    with pytest.raises(ValueError, match=r"k\.csv row 2: 3 fields"):
        load_datalist(path, ["Mass"])


def test_duplicate_image_rows_raise(images: Path):
    path = write_csv(images / "l.csv", ["image", "Mass"], [["img/a.png", 1], ["img/b.png", 1], ["img/a.png", 0]])
    with pytest.raises(ValueError, match=r"listed twice \(row 2 and row 4\)"):
        load_datalist(path, ["Mass"])


def test_colliding_stems_get_folder_prefixes(tmp_path: Path):
    write_png(tmp_path / "p1" / "image.png")
    write_png(tmp_path / "p2" / "image.png")
    write_png(tmp_path / "p2" / "other.png")
    path = write_csv(
        tmp_path / "l.csv", ["image", "Mass"], [["p1/image.png", 1], ["p2/image.png", 0], ["p2/other.png", 0]]
    )
    assert [i["id"] for i in load_datalist(path, ["Mass"])["all"]] == ["p1_image", "p2_image", "other"]


def test_id_column_and_mask_columns(images: Path):
    write_png(images / "masks" / "a_Mass.png")
    path = write_csv(
        images / "l.csv",
        ["id", "image", "Mass", "mask_Mass"],
        [["case1", "img/a.png", 1, "masks/a_Mass.png"], ["case2", "img/b.png", 0, ""]],
    )
    dl = load_datalist(path)  # labels found through their mask_ companions
    assert dl.label_names == ["Mass"]
    first, second = dl["all"]
    assert first["id"] == "case1" and second["id"] == "case2"
    assert first["mask_Mass"] == str((images / "masks" / "a_Mass.png").resolve())
    assert second["mask_Mass"] == ""
    bad = write_csv(images / "m.csv", ["image", "Mass", "mask_Mass"], [["img/a.png", 1, "masks/none.png"]])
    with pytest.raises(FileNotFoundError, match=r"m\.csv.*mask.*row 2.*none\.png"):
        load_datalist(bad)


def test_unknown_option_is_a_type_error(images: Path):
    path = write_csv(images / "l.csv", ["image", "Mass"], [["img/a.png", 1]])
    with pytest.raises(TypeError, match="imagekey"):
        load_datalist(path, ["Mass"], imagekey="image")


def test_missing_source_and_unsupported_suffix(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_datalist(tmp_path / "nope.csv")
    other = tmp_path / "x.txt"
    other.write_text("hi")
    with pytest.raises(ValueError, match=r"x\.txt.*unsupported"):
        load_datalist(other)


def test_tsv_and_bom(images: Path):
    path = images / "l.tsv"
    path.write_text("\ufeffimage\tMass\nimg/a.png\t1\n", encoding="utf-8")
    dl = load_datalist(path, ["Mass"])
    assert dl["all"][0]["label"].tolist() == [1.0]

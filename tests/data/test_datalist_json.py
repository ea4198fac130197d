"""MONAI-style JSON datalists."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from medclass.data import Datalist, load_datalist


def _write(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_list_labels_with_null(images: Path):
    path = _write(
        images / "dl.json",
        {
            "label_names": ["Mass", "Nodule"],
            "training": [{"image": "img/a.png", "label": [1, None], "patient_id": "p1", "age": 40}],
            "validation": [{"image": "img/b.png", "label": [0, 1]}],
            "test": [{"image": "img/c.png", "label": [0, 0]}],
        },
    )
    dl = load_datalist(path)
    assert dl.label_names == ["Mass", "Nodule"] and dl.task == "multilabel"
    assert dl.sizes() == {"training": 1, "validation": 1, "test": 1}
    a = dl["training"][0]
    assert a["label"][0] == 1.0 and math.isnan(a["label"][1])
    assert a["image"] == str((images / "img" / "a.png").resolve()) and a["id"] == "a"
    assert a["patient_id"] == "p1" and a["age"] == "40"
    # keys are uniform across items so they collate
    assert set(dl["validation"][0]) == set(a) and dl["validation"][0]["patient_id"] == ""


def test_dict_labels_infer_names_and_reject_unknown(images: Path):
    data = {"training": [{"image": "img/a.png", "label": {"Mass": 1}}, {"image": "img/b.png", "label": {"Edema": 0}}]}
    dl = load_datalist(_write(images / "d.json", data))
    assert dl.label_names == ["Mass", "Edema"] and dl.task == "multilabel"
    first = dl["training"][0]["label"]
    assert first[0] == 1.0 and math.isnan(first[1])
    with pytest.raises(ValueError, match=r"d\.json: training\[1\].*unknown label 'Edema'.*Mass"):
        load_datalist(images / "d.json", ["Mass"])


def test_class_index_and_class_name_labels(images: Path):
    data = {
        "training": [{"image": "img/a.png", "label": 2}, {"image": "img/b.png", "label": 0}],
        "test": [{"image": "img/c.png", "label": "cat"}],
    }
    dl = load_datalist(_write(images / "c.json", data), ["cat", "dog", "eel"])
    assert dl.task == "multiclass"
    assert dl["training"][0]["label"].tolist() == [0, 0, 1]
    assert dl["test"][0]["label"].tolist() == [1, 0, 0]
    with pytest.raises(ValueError, match=r"c\.json: training\[0\].*class index 2 is outside 0\.\.1"):
        load_datalist(images / "c.json", ["cat", "dog"])


def test_inferred_class_names_and_binary_ints(images: Path):
    names = {"training": [{"image": "img/a.png", "label": "Hand"}, {"image": "img/b.png", "label": "CXR"}]}
    dl = load_datalist(_write(images / "n.json", names))
    assert dl.task == "multiclass" and dl.label_names == ["CXR", "Hand"]
    ints = {"training": [{"image": "img/a.png", "label": 1}, {"image": "img/b.png", "label": 0}]}
    dl = load_datalist(_write(images / "i.json", ints))
    assert dl.task == "binary" and dl.label_names == ["class_1"]
    assert [i["label"].tolist() for i in dl["training"]] == [[1.0], [0.0]]
    dl = load_datalist(images / "i.json", task="multiclass")
    assert dl.label_names == ["class_0", "class_1"] and dl["training"][0]["label"].tolist() == [0, 1]


def test_string_entries_and_missing_label_are_unknown(images: Path):
    data = {"training": [{"image": "img/a.png", "label": [1]}], "test": ["img/b.png"]}
    dl = load_datalist(_write(images / "s.json", data), ["Mass"])
    assert np.isnan(dl["test"][0]["label"]).all()


def test_paths_relative_to_dataset_dir(images: Path, tmp_path: Path):
    other = tmp_path / "elsewhere"
    other.mkdir()
    path = _write(other / "dl.json", {"training": [{"image": "img/a.png", "label": [1]}]})
    with pytest.raises(FileNotFoundError, match=r"training\[0\].*a\.png"):
        load_datalist(path, ["Mass"])
    dl = load_datalist(path, ["Mass"], dataset_dir=images)
    assert dl["training"][0]["image"] == str((images / "img" / "a.png").resolve())


def test_json_errors_name_file_and_entry(images: Path):
    bad = images / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json: not valid JSON \(line 1"):
        load_datalist(bad)
    with pytest.raises(ValueError, match=r"n\.json.*no 'training'"):
        load_datalist(_write(images / "n.json", {"foo": []}))
    with pytest.raises(ValueError, match=r"e\.json: validation\[0\].*no 'image'"):
        load_datalist(_write(images / "e.json", {"validation": [{"label": [1]}]}), ["Mass"])
    with pytest.raises(ValueError, match=r"v\.json: training\[0\] label\[1\].*'maybe'"):
        maybe = {"training": [{"image": "img/a.png", "label": [1, "maybe"]}]}
        load_datalist(_write(images / "v.json", maybe), ["a", "b"])
    with pytest.raises(ValueError, match=r"w\.json: training\[0\].*3 values, expected 2"):
        load_datalist(_write(images / "w.json", {"training": [{"image": "img/a.png", "label": [1, 0, 0]}]}), ["a", "b"])
    with pytest.raises(TypeError, match="CSV"):
        load_datalist(images / "w.json", ["a", "b"], image_key="x")


def test_dict_source_and_to_json_round_trip(images: Path, tmp_path: Path):
    data = {
        "training": [{"image": "img/a.png", "label": [1, None], "patient_id": "p1"}],
        "test": [{"image": "img/b.png", "label": [0, 1], "patient_id": "p2"}],
    }
    dl = load_datalist(data, ["x", "y"], dataset_dir=images)
    out = dl.to_json(tmp_path / "saved" / "dl.json")
    back = load_datalist(out)
    assert isinstance(back, Datalist)
    assert back.label_names == ["x", "y"] and back.task == "multilabel" and back.sizes() == dl.sizes()
    for split in dl.splits:
        for a, b in zip(dl[split], back[split]):
            assert a["image"] == b["image"] and a["id"] == b["id"] and a["patient_id"] == b["patient_id"]
            np.testing.assert_array_equal(a["label"], b["label"])

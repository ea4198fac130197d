"""The Datalist container: invariants checked on construction, helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medclass.data import Datalist, canonical_split, load_datalist


def _item(k: int, label, image=None) -> dict:
    return {"image": image if image is not None else f"/x/{k}.png", "id": f"i{k}", "label": np.asarray(label, np.float32)}


def test_valid_datalist_helpers():
    dl = Datalist({"training": [_item(0, [1, 0])], "test": [_item(1, [0, 1])]}, ["a", "b"], "multilabel")
    assert dl.num_labels == 2 and dl.sizes() == {"training": 1, "test": 1}
    assert [i["id"] for i in dl.all_items()] == ["i0", "i1"]
    assert "test" in dl and "validation" not in dl
    with pytest.raises(KeyError, match="no split 'validation'.*'training', 'test'"):
        dl["validation"]


@pytest.mark.parametrize(
    "splits, names, task, message",
    [
        ({"all": [_item(0, [1])]}, ["a"], "regression", "unknown task"),
        ({"all": [_item(0, [1, 0])]}, ["a", "b"], "binary", "exactly one label"),
        ({"all": [_item(0, [1])]}, ["a"], "multiclass", "at least 2 classes"),
        ({"all": [_item(0, [1, 0])]}, ["a", "A"], "multilabel", "duplicate label names"),
        ({"train": [_item(0, [1])]}, ["a"], "binary", "unknown split 'train'"),
        ({"all": [_item(0, [1])], "test": [_item(1, [1])]}, ["a"], "binary", "'all' cannot be combined"),
        ({"all": [_item(0, [1, 0, 0])]}, ["a", "b"], "multilabel", r"shape \(2,\)"),
        ({"all": [_item(0, [1, 1])]}, ["a", "b"], "multiclass", "not one-hot"),
        ({"all": [_item(0, [1]), _item(0, [0])]}, ["a"], "binary", "id 'i0' is used twice"),
        ({"all": [{"id": "x", "label": np.ones(1, np.float32)}]}, ["a"], "binary", "has no 'image'"),
    ],
)
def test_invalid_datalists(splits, names, task, message):
    with pytest.raises(ValueError, match=message):
        Datalist(splits, names, task)


def test_multiclass_unknown_label_is_allowed():
    dl = Datalist({"all": [_item(0, [np.nan, np.nan]), _item(1, [0, 1])]}, ["a", "b"], "multiclass")
    assert np.isnan(dl["all"][0]["label"]).all()


def test_to_json_refuses_arrays(tmp_path: Path):
    dl = Datalist({"all": [_item(0, [1], image=np.zeros((4, 4), np.uint8))]}, ["a"], "binary")
    with pytest.raises(TypeError, match="array"):
        dl.to_json(tmp_path / "x.json")


@pytest.mark.parametrize("name, expected", [("train", "training"), ("Valid", "validation"), ("val", "validation"),
                                            ("TEST", "test"), ("testing", "test"), ("all", "all")])
def test_canonical_split(name, expected):
    assert canonical_split(name) == expected


def test_canonical_split_unknown():
    with pytest.raises(ValueError, match="row 4.*'holdout'"):
        canonical_split("holdout", "row 4")


def test_datalist_passes_through_load_datalist():
    dl = Datalist({"all": [_item(0, [1])]}, ["a"], "binary")
    assert load_datalist(dl) is dl

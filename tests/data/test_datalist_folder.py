"""Class-per-folder trees (MedNIST and NIH1000 layouts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medclass.data import load_datalist
from tests.data.conftest import write_png


def test_class_tree_without_splits(tmp_path: Path):
    root = tmp_path / "MedNIST"
    for cls in ("Hand", "CXR", "AbdomenCT"):
        for k in range(2):
            write_png(root / cls / f"00000{k}.jpeg")
    (root / "CXR" / ".hidden.jpeg").write_bytes(b"x")
    (root / "CXR" / "notes.txt").write_text("not an image")
    (root / "README.md").write_text("ignored")
    dl = load_datalist(root)
    assert dl.task == "multiclass" and dl.label_names == ["AbdomenCT", "CXR", "Hand"]
    assert dl.sizes() == {"all": 6}
    by_id = {i["id"]: i for i in dl["all"]}
    # stems collide across classes: ids take the class folder as prefix
    assert set(by_id) == {f"{c}_00000{k}" for c in ("AbdomenCT", "CXR", "Hand") for k in range(2)}
    assert by_id["CXR_000001"]["label"].tolist() == [0, 1, 0]
    assert by_id["Hand_000000"]["image"] == str(root / "Hand" / "000000.jpeg")


def test_split_tree_like_nih1000(tmp_path: Path):
    root = tmp_path / "NIH"
    for split, n in (("train", 3), ("valid", 1), ("test", 2)):
        for cls in ("0_normal", "1_abnormal"):
            for k in range(n):
                write_png(root / split / cls / f"{split}_{cls}_{k}.png")
    dl = load_datalist(root)
    assert dl.sizes() == {"training": 6, "validation": 2, "test": 4}
    assert dl.label_names == ["0_normal", "1_abnormal"]
    assert dl["training"][0]["label"].tolist() == [1, 0] and dl["training"][-1]["label"].tolist() == [0, 1]
    binary = load_datalist(root, task="binary")
    assert binary.label_names == ["1_abnormal"] and binary.task == "binary"
    assert sorted(i["label"][0] for i in binary["test"]) == [0, 0, 1, 1]


def test_extensions_and_nested_files(tmp_path: Path):
    root = tmp_path / "tree"
    write_png(root / "a" / "x.PNG")
    (root / "b" / "case1").mkdir(parents=True)
    (root / "b" / "case1" / "vol.nii.gz").write_bytes(b"")  # only listed, not read
    (root / "b" / "case1" / "slice.dcm").write_bytes(b"")
    dl = load_datalist(root)
    assert sorted(i["id"] for i in dl["all"]) == ["slice", "vol", "x"]


def test_empty_class_folder_is_an_error(tmp_path: Path):
    root = tmp_path / "tree"
    write_png(root / "a" / "x.png")
    (root / "b").mkdir()
    (root / "b" / "readme.txt").write_text("no images")
    with pytest.raises(ValueError, match=r"tree/b: class folder holds no images"):
        load_datalist(root)


def test_no_class_folders_and_mixed_layout(tmp_path: Path):
    root = tmp_path / "flat"
    write_png(root / "x.png")
    with pytest.raises(ValueError, match=r"flat: no class folders"):
        load_datalist(root)
    mixed = tmp_path / "mixed"
    write_png(mixed / "train" / "a" / "x.png")
    write_png(mixed / "other" / "a" / "y.png")
    with pytest.raises(ValueError, match=r"mixed.*'other'.*not splits"):
        load_datalist(mixed)


def test_given_label_names_must_cover_folders(tmp_path: Path):
    root = tmp_path / "tree"
    write_png(root / "cat" / "x.png")
    write_png(root / "dog" / "y.png")
    dl = load_datalist(root, ["dog", "cat", "eel"])
    assert dl.label_names == ["dog", "cat", "eel"]
    assert {i["id"]: i["label"].tolist() for i in dl["all"]} == {"x": [0, 1, 0], "y": [1, 0, 0]}
    with pytest.raises(ValueError, match=r"class folder 'dog' is not among label_names"):
        load_datalist(root, ["cat", "eel"])

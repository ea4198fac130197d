"""MedMNIST v2 .npz files built in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medclass.data import CXR14_LABELS, load_datalist, load_medmnist, medmnist_flag


def _npz(path: Path, labels: dict[str, np.ndarray], image_shape=(28, 28), drop: str | None = None) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, lab in labels.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, size=(len(lab), *image_shape), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.asarray(lab, dtype=np.uint8)
    if drop:
        arrays.pop(drop)
    np.savez(path, **arrays)
    return path


def test_binary_known_set(tmp_path: Path):
    path = _npz(
        tmp_path / "pneumoniamnist.npz",
        {"train": [[0], [1], [1]], "val": [[0], [1]], "test": [[1]]},
    )
    dl = load_datalist(path)
    assert dl.task == "binary" and dl.label_names == ["pneumonia"]
    assert dl.sizes() == {"training": 3, "validation": 2, "test": 1}
    item = dl["training"][1]
    assert item["id"] == "pneumoniamnist_train_1"
    assert item["label"].dtype == np.float32 and item["label"].tolist() == [1.0]
    assert item["image"].dtype == np.uint8 and item["image"].shape == (28, 28)
    raw = np.load(path)
    np.testing.assert_array_equal(item["image"], raw["train_images"][1])
    assert dl["validation"][0]["id"] == "pneumoniamnist_val_0"


def test_binary_as_multiclass_override(tmp_path: Path):
    path = _npz(tmp_path / "pneumoniamnist_64.npz", {"train": [[0], [1]], "val": [[0]], "test": [[1]]}, (64, 64))
    assert medmnist_flag(path) == "pneumoniamnist"
    dl = load_medmnist(path, task="multiclass")
    assert dl.label_names == ["normal", "pneumonia"]
    assert dl["training"][1]["label"].tolist() == [0, 1]


def test_unknown_multiclass_set_is_one_hot(tmp_path: Path):
    path = _npz(tmp_path / "mystery.npz", {"train": [[0], [3], [2]], "val": [[1]], "test": [[0]]}, (28, 28, 3))
    dl = load_medmnist(path)
    assert dl.task == "multiclass" and dl.label_names == ["class_0", "class_1", "class_2", "class_3"]
    assert dl["training"][1]["label"].tolist() == [0, 0, 0, 1]
    assert dl["training"][0]["image"].shape == (28, 28, 3)
    named = load_medmnist(path, ["a", "b", "c", "d"])
    assert named.label_names == ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match=r"mystery\.npz.*2 label names.*4 entries"):
        load_medmnist(path, ["a", "b"])


def test_known_multiclass_names(tmp_path: Path):
    path = _npz(tmp_path / "organmnist3d.npz", {"train": [[10]], "val": [[0]], "test": [[4]]}, (28, 28, 28))
    dl = load_medmnist(path)
    assert dl.task == "multiclass" and dl.num_labels == 11 and dl.label_names[10] == "spleen"
    assert dl["training"][0]["image"].shape == (28, 28, 28)


def test_multilabel_set(tmp_path: Path):
    lab = np.zeros((4, 14), np.uint8)
    lab[0, 2] = lab[1, 13] = 1
    path = _npz(tmp_path / "chestmnist.npz", {"train": lab, "val": lab[:2], "test": lab[:1]})
    dl = load_medmnist(path)
    assert dl.task == "multilabel" and dl.label_names == list(CXR14_LABELS)
    assert dl["training"][0]["label"][2] == 1 and dl["training"][0]["label"].sum() == 1
    other = _npz(tmp_path / "unknown_ml.npz", {"train": lab[:, :3], "val": lab[:1, :3], "test": lab[:1, :3]})
    assert load_medmnist(other).label_names == ["class_0", "class_1", "class_2"]


def test_missing_key_and_corrupt_file(tmp_path: Path):
    path = _npz(tmp_path / "broken.npz", {"train": [[0]], "val": [[1]], "test": [[0]]}, drop="val_labels")
    with pytest.raises(ValueError, match=r"broken\.npz.*missing keys \['val_labels'\]"):
        load_medmnist(path)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 this is not a zip archive")
    with pytest.raises(ValueError, match=r"corrupt\.npz"):
        load_datalist(corrupt)
    with pytest.raises(FileNotFoundError, match="absent.npz"):
        load_medmnist(tmp_path / "absent.npz")


def test_bad_shapes_and_values(tmp_path: Path):
    path = _npz(tmp_path / "pneumoniamnist.npz", {"train": [[0], [2]], "val": [[1]], "test": [[0]]})
    with pytest.raises(ValueError, match=r"pneumoniamnist\.npz.*0 or 1.*\[2\]"):
        load_medmnist(path)
    arrays = {f"{s}_{k}": np.zeros((2, 28, 28), np.uint8) if k == "images" else np.zeros((3, 1), np.uint8)
              for s in ("train", "val", "test") for k in ("images", "labels")}
    np.savez(tmp_path / "count.npz", **arrays)
    with pytest.raises(ValueError, match=r"count\.npz.*train_labels has shape \(3, 1\) for 2 images"):
        load_medmnist(tmp_path / "count.npz")

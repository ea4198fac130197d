"""The loaders on the real public data (skipped where MEDCLASS_DATA is absent)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from medclass.data import (
    CXR14_LABELS,
    ensure_splits,
    label_matrix,
    labels_from_findings,
    load_datalist,
    patient_overlap,
    split_report,
)
from tests.conftest import need


@pytest.fixture(scope="module")
def data_entry(real_data):
    path = need(real_data, "cxr14/Data_Entry_2017.csv")
    start = time.perf_counter()
    dl = load_datalist(path, check_files=False)
    return dl, time.perf_counter() - start


def test_data_entry_2017_parses(data_entry):
    dl, seconds = data_entry
    assert seconds < 10, f"parsing took {seconds:.1f} s"
    items = dl["all"]
    assert len(items) == 112_120 and dl.label_names == list(CXR14_LABELS) and dl.task == "multilabel"
    assert len({i["patient_id"] for i in items}) == 30_805
    assert items[0]["id"] == "00000001_000" and items[0]["patient_id"] == "1"
    labels = label_matrix(items)
    assert not np.isnan(labels).any()
    # official counts of two findings and of "No Finding"
    assert labels[:, CXR14_LABELS.index("Hernia")].sum() == 227
    assert labels[:, CXR14_LABELS.index("Infiltration")].sum() == 19_894
    assert (labels.sum(1) == 0).sum() == 60_361
    assert items[1]["label"].tolist() == labels_from_findings("Cardiomegaly|Emphysema", CXR14_LABELS, "x").tolist()


def test_data_entry_2017_patient_disjoint_split(data_entry):
    dl, _ = data_entry
    start = time.perf_counter()
    splits = ensure_splits(dl, (0.7, 0.15, 0.15), seed=0)
    assert time.perf_counter() - start < 10
    assert sum(splits.sizes().values()) == 112_120
    assert patient_overlap(splits.splits) == {}
    patients = [{i["patient_id"] for i in splits[s]} for s in splits.splits]
    assert not (patients[0] & patients[1]) and not (patients[0] & patients[2]) and not (patients[1] & patients[2])
    report = split_report(splits.splits, dl.label_names)
    for name in ("Hernia", "Pneumonia", "Effusion"):
        prevalences = [report[s]["labels"][name]["prevalence"] for s in report]
        assert max(prevalences) - min(prevalences) < 0.2 * max(prevalences), (name, prevalences)


def test_nih1000_csv_with_files(real_data):
    path = need(real_data, "cxr14/labels_nih1000.csv")
    need(real_data, "cxr14/NIH1000")
    dl = load_datalist(path, check_files=True)
    assert dl.sizes() == {"training": 600, "validation": 200, "test": 200}
    assert dl.label_names == list(CXR14_LABELS)
    items = dl.all_items()
    assert len({i["patient_id"] for i in items}) == 264
    first = items[0]
    assert first["image"].endswith(".png") and first["sex"] in ("M", "F") and first["view"] in ("PA", "AP")
    # the per-label columns agree with the raw findings column
    for item in items:
        expected = labels_from_findings(item["finding_labels"], CXR14_LABELS, item["id"])
        np.testing.assert_array_equal(item["label"], expected)
    # "abnormal" folder = some finding, except one image filed as normal whose official label is Pneumonia
    disagree = [i for i in items if (i["label"].sum() > 0) != (i["folder_label_abnormal"] == "1")]
    assert [i["finding_labels"] for i in disagree] == ["Pneumonia"]
    # the given split shares patients; resplit fixes it
    assert patient_overlap(dl.splits)
    fixed = ensure_splits(dl, resplit=True, seed=0)
    assert patient_overlap(fixed.splits) == {} and sum(fixed.sizes().values()) == 1000


def test_nih1000_folder_tree(real_data):
    root = need(real_data, "cxr14/NIH1000")
    dl = load_datalist(root)
    assert dl.task == "multiclass" and dl.label_names == ["0_normal", "1_abnormal"]
    assert dl.sizes() == {"training": 600, "validation": 200, "test": 200}
    assert len({i["id"] for i in dl.all_items()}) == 1000
    binary = load_datalist(root, task="binary")
    assert binary.label_names == ["1_abnormal"]


def test_pneumoniamnist(real_data):
    path = need(real_data, "medmnist/pneumoniamnist.npz")
    dl = load_datalist(path)
    assert dl.task == "binary" and dl.label_names == ["pneumonia"]
    assert dl.sizes() == {"training": 4708, "validation": 524, "test": 624}
    item = dl["test"][0]
    assert item["image"].shape == (28, 28) and item["image"].dtype == np.uint8
    assert item["id"] == "pneumoniamnist_test_0"
    prevalence = label_matrix(dl["training"]).mean()
    assert 0.6 < prevalence < 0.8  # PneumoniaMNIST is about 74% pneumonia


def test_adrenalmnist3d(real_data):
    path = need(real_data, "medmnist/adrenalmnist3d.npz")
    dl = load_datalist(path)
    assert dl.task == "binary" and dl.label_names == ["adrenal_mass"]
    assert dl.sizes() == {"training": 1188, "validation": 98, "test": 298}
    assert dl["training"][0]["image"].shape == (28, 28, 28)

"""Label parsing and label statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medclass.data import (
    CXR14_LABELS,
    label_matrix,
    label_prevalence,
    labels_from_findings,
    normalize_name,
    parse_label_value,
)


def test_cxr14_labels_official_order():
    assert CXR14_LABELS[0] == "Atelectasis"
    assert CXR14_LABELS[7] == "Pneumothorax"
    assert CXR14_LABELS[-1] == "Hernia"
    assert len(CXR14_LABELS) == 14 and len(set(CXR14_LABELS)) == 14
    assert "Pleural_Thickening" in CXR14_LABELS


@pytest.mark.parametrize(
    "value, expected",
    [
        (1, 1.0),
        (0, 0.0),
        (True, 1.0),
        (False, 0.0),
        (1.0, 1.0),
        (0.0, 0.0),
        ("1", 1.0),
        ("0", 0.0),
        ("1.0", 1.0),
        ("0.0", 0.0),
        (" 1 ", 1.0),
        (np.uint8(1), 1.0),
        (np.float32(0), 0.0),
    ],
)
def test_parse_label_value_known(value, expected):
    assert parse_label_value(value, "here") == expected


@pytest.mark.parametrize("value", ["", "nan", "NaN", None, float("nan"), -1, "-1", "-1.0", "  "])
def test_parse_label_value_unknown_is_nan(value):
    assert math.isnan(parse_label_value(value, "here"))


@pytest.mark.parametrize("value", [2, "2", "yes", 0.5, "positive", [1], "1|0"])
def test_parse_label_value_rejects_and_names_where(value):
    with pytest.raises(ValueError, match=r"labels\.csv row 7"):
        parse_label_value(value, "labels.csv row 7")


def test_normalize_name():
    assert normalize_name("Pleural_Thickening") == normalize_name("pleural thickening") == "pleural thickening"
    assert normalize_name(" PLEURAL-THICKENING ") == "pleural thickening"


def test_findings_multiple_and_no_finding():
    vec = labels_from_findings("Cardiomegaly|Effusion", CXR14_LABELS, "row 2")
    assert vec.dtype == np.float32 and vec.shape == (14,)
    assert vec.tolist() == [1.0 if n in ("Cardiomegaly", "Effusion") else 0.0 for n in CXR14_LABELS]
    assert labels_from_findings("No Finding", CXR14_LABELS, "row 3").tolist() == [0.0] * 14
    assert labels_from_findings("no finding", CXR14_LABELS, "row 3").tolist() == [0.0] * 14


def test_findings_blank_is_unknown():
    assert np.isnan(labels_from_findings("", CXR14_LABELS, "row 4")).all()
    assert np.isnan(labels_from_findings(None, ["Mass"], "row 4")).all()


def test_findings_name_matching_ignores_case_and_underscores():
    vec = labels_from_findings("pleural thickening", CXR14_LABELS, "row 5")
    assert vec[CXR14_LABELS.index("Pleural_Thickening")] == 1.0
    assert vec.sum() == 1.0


def test_findings_unknown_name_raises_with_valid_names():
    with pytest.raises(ValueError, match=r"row 9.*'Covid'.*Atelectasis.*Hernia"):
        labels_from_findings("Mass|Covid", CXR14_LABELS, "row 9")


def test_findings_subset_of_cxr14_ignores_other_cxr14_findings():
    vec = labels_from_findings("Nodule|Mass", ["Effusion", "Mass"], "row 2")
    assert vec.tolist() == [0.0, 1.0]
    # a name that is not a CXR14 finding still raises
    with pytest.raises(ValueError, match="Flu"):
        labels_from_findings("Flu", ["Effusion", "Mass"], "row 2")


def test_findings_non_cxr14_vocabulary_rejects_cxr14_names():
    with pytest.raises(ValueError, match="Nodule"):
        labels_from_findings("Nodule", ["pneumonia", "covid"], "row 2")
    assert labels_from_findings("covid", ["pneumonia", "covid"], "row 2").tolist() == [0.0, 1.0]
    assert labels_from_findings("Nodule", ["pneumonia"], "row 2", ignore=["Nodule"]).tolist() == [0.0]


def test_findings_custom_separator_and_contradiction():
    assert labels_from_findings("Mass; Nodule", ["Mass", "Nodule"], "r", sep=";").tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="No Finding"):
        labels_from_findings("No Finding|Mass", CXR14_LABELS, "row 11")


def test_findings_result_is_a_fresh_array():
    a = labels_from_findings("Mass", CXR14_LABELS, "r")
    a[:] = 7
    assert labels_from_findings("Mass", CXR14_LABELS, "r").max() == 1.0


def _items(labels):
    return [{"id": f"i{k}", "label": np.asarray(v, dtype=np.float32)} for k, v in enumerate(labels)]


def test_label_matrix_stacks_and_checks_lengths():
    m = label_matrix(_items([[1, 0], [np.nan, 1]]))
    assert m.shape == (2, 2) and m.dtype == np.float32
    assert m[0].tolist() == [1.0, 0.0] and np.isnan(m[1, 0])
    assert label_matrix([], num_labels=3).shape == (0, 3)
    with pytest.raises(ValueError, match="'i1'.*1 label values, expected 2"):
        label_matrix(_items([[1, 0], [1]]))
    with pytest.raises(ValueError, match="no 'label'"):
        label_matrix([{"id": "x"}])


def test_label_prevalence_counts():
    stats = label_prevalence(_items([[1, 0], [0, np.nan], [1, np.nan], [np.nan, np.nan]]), ["a", "b"])
    assert stats["a"] == {"positives": 2, "negatives": 1, "unknown": 1, "prevalence": pytest.approx(2 / 3)}
    assert stats["b"]["positives"] == 0 and stats["b"]["negatives"] == 1 and stats["b"]["unknown"] == 3
    assert stats["b"]["prevalence"] == 0.0
    none_known = label_prevalence(_items([[np.nan]]), ["c"])
    assert math.isnan(none_known["c"]["prevalence"])
    with pytest.raises(ValueError, match="2 label values, expected 3"):
        label_prevalence(_items([[1, 0]]), ["a", "b", "c"])

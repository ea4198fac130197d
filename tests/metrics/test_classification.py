"""Metrics cross-checked against scikit-learn; NaN labels excluded; undefined AUC is nan, not 0.5."""

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medclass.metrics import accuracy_at, binary_auc, decisions, mean_auc, per_label_auc, summarize


def test_binary_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500).astype(float)
    s = np.round(rng.normal(size=500) + y, 1)  # rounding creates many ties
    assert binary_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_nan_labels_are_excluded_per_label():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (300, 3)).astype(float)
    s = rng.normal(size=(300, 3)) + y
    y_nan = y.copy()
    y_nan[:50, 1] = np.nan
    aucs = per_label_auc(y_nan, s)
    assert aucs[0] == pytest.approx(roc_auc_score(y[:, 0], s[:, 0]))
    assert aucs[1] == pytest.approx(roc_auc_score(y[50:, 1], s[50:, 1]))
    assert aucs[1] != pytest.approx(roc_auc_score(y[:, 1], s[:, 1]))


def test_label_without_positives_is_undefined_not_half():
    y = np.array([[0, 1], [0, 0], [0, 1], [0, 0]], dtype=float)
    s = np.array([[0.1, 0.9], [0.2, 0.1], [0.3, 0.8], [0.4, 0.3]])
    aucs = per_label_auc(y, s)
    assert math.isnan(aucs[0])
    assert aucs[1] == 1.0
    assert mean_auc(y, s) == 1.0  # mean over defined labels only
    summary = summarize(y, s, ["a", "b"])
    assert summary["per_label"]["a"]["auc"] is None and summary["per_label"]["a"]["positives"] == 0


def test_multiclass_one_vs_rest_and_accuracy():
    rng = np.random.default_rng(2)
    cls = rng.integers(0, 4, 200)
    onehot = np.eye(4)[cls]
    logits = rng.normal(size=(200, 4)) + 2 * onehot
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    expected = roc_auc_score(cls, p, multi_class="ovr", average="macro")
    assert mean_auc(onehot, p) == pytest.approx(expected)
    assert accuracy_at(onehot, p, task="multiclass") == pytest.approx((p.argmax(1) == cls).mean())
    d = decisions(p, task="multiclass")
    assert (d.sum(1) == 1).all() and (d.argmax(1) == p.argmax(1)).all()


def test_multilabel_accuracy_over_known_pairs_and_thresholds():
    y = np.array([[1, np.nan], [0, 1], [1, 0]])
    p = np.array([[0.7, 0.9], [0.6, 0.4], [0.2, 0.1]])
    # at 0.5: pairs (1,.7)ok (0,.6)wrong (1,.4)wrong-> label2 row2; (1,.2)wrong (0,.1)ok  -> 2/5
    assert accuracy_at(y, p, 0.5) == pytest.approx(2 / 5)
    assert accuracy_at(y, p, [0.65, 0.3]) == pytest.approx(4 / 5)


def test_bad_scores_raise():
    with pytest.raises(ValueError, match="NaN or Inf"):
        binary_auc([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="differ"):
        per_label_auc(np.zeros((3, 2)), np.zeros((3, 3)))

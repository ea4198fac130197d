"""Multi-class metrics on one-hot labels ``(N, K)`` (rows with NaN are unknown and excluded) and
probabilities ``(N, K)``: confusion matrix, per-class and balanced accuracy, macro and micro AUC."""

from __future__ import annotations

import math

import numpy as np

from medclass.metrics.classification import binary_auc, per_label_auc


def _known_rows(labels, probs) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    if y.ndim != 2 or y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and probabilities {p.shape} must both be (N, K)")
    known = ~np.isnan(y).any(axis=1)
    return y[known], p[known]


def confusion_matrix(labels, probs) -> np.ndarray:
    """``(K, K)`` counts: rows are the labelled class, columns the arg-max prediction."""
    y, p = _known_rows(labels, probs)
    k = y.shape[1]
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y.argmax(axis=1), p.argmax(axis=1)), 1)
    return cm


def per_class_accuracy(labels, probs) -> np.ndarray:
    """Recall of each class (the diagonal over the row sums); ``nan`` for a class with no case."""
    cm = confusion_matrix(labels, probs)
    rows = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rows > 0, np.diag(cm) / np.maximum(rows, 1), np.nan)


def balanced_accuracy(labels, probs) -> float:
    """Mean per-class accuracy over the classes present (scikit-learn's ``balanced_accuracy_score``)."""
    acc = per_class_accuracy(labels, probs)
    acc = acc[~np.isnan(acc)]
    return float(acc.mean()) if acc.size else math.nan


def macro_auc(labels, probs) -> float:
    """Mean one-vs-rest AUC over the classes where it is defined."""
    y, p = _known_rows(labels, probs)
    aucs = per_label_auc(y, p)
    aucs = aucs[~np.isnan(aucs)]
    return float(aucs.mean()) if aucs.size else math.nan


def micro_auc(labels, probs) -> float:
    """AUC of all (case, class) pairs pooled (scikit-learn's ``average='micro'``)."""
    y, p = _known_rows(labels, probs)
    return binary_auc(y.ravel(), p.ravel())

"""AUC and accuracy for multi-label, binary and multi-class outputs.

All functions take ``labels`` of shape ``(N, C)`` holding 1 (positive), 0 (negative) or NaN (unknown), and
``scores`` of shape ``(N, C)`` (probabilities or logits; AUC only uses their order). Multi-class labels are
one-hot rows. A label whose known values hold no positive or no negative has an undefined AUC: ``nan``,
never a silent 0.5.
"""

from __future__ import annotations

import math

import numpy as np


def _as_2d(x, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (N, C), got {arr.shape}")
    return arr


def known_pairs(labels, scores, what: str = "scores", check_labels: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Flattened float64 ``(labels, scores)`` of one label with the unknown (NaN) labels dropped.

    Raises ValueError when the lengths differ, a score is NaN/Inf, or (``check_labels``) a label is not 1/0/NaN.
    """
    y = np.asarray(labels, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and {what} differ in length: {y.shape} vs {s.shape}")
    keep = ~np.isnan(y)
    y, s = y[keep], s[keep]
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{what} hold NaN or Inf values")
    if check_labels:
        bad = ~np.isin(y, (0.0, 1.0))
        if bad.any():
            raise ValueError(f"labels must be 1, 0 or NaN, got {np.unique(y[bad])[:5].tolist()}")
    return y, s


def binary_auc(labels, scores) -> float:
    """Area under the ROC curve for one label (Mann-Whitney U with mid-ranks for ties).

    Args:
        labels: ``(N,)`` 1/0/NaN; NaN rows are ignored.
        scores: ``(N,)`` real scores, higher meaning more likely positive.

    Returns:
        The AUC in [0, 1], or ``nan`` when the known labels hold no positive or no negative.
    """
    y, s = known_pairs(labels, scores)
    n_pos = int((y == 1).sum())
    n_neg = int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    # mid-ranks for tied scores
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = ((ends - counts + ends + 1) / 2.0)[inverse.ravel()]
    rank_sum = ranks[y == 1].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def per_label_auc(labels, scores) -> np.ndarray:
    """AUC per label (one-vs-rest for one-hot multi-class labels): ``(C,)`` with ``nan`` where undefined."""
    y, s = _as_2d(labels, "labels"), _as_2d(scores, "scores")
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in shape")
    return np.array([binary_auc(y[:, c], s[:, c]) for c in range(y.shape[1])])


def mean_auc(labels, scores) -> float:
    """Mean of the defined per-label AUCs (macro AUC); ``nan`` when no label has one."""
    aucs = per_label_auc(labels, scores)
    defined = aucs[~np.isnan(aucs)]
    return float(defined.mean()) if defined.size else math.nan


def decisions(probs, thresholds=0.5, task: str = "multilabel") -> np.ndarray:
    """0/1 decisions ``(N, C)``: ``prob >= threshold`` per label, or the one-hot arg-max for multi-class."""
    p = _as_2d(probs, "probs")
    if task == "multiclass":
        out = np.zeros_like(p, dtype=np.int64)
        out[np.arange(len(p)), p.argmax(axis=1)] = 1
        return out
    t = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (p.shape[1],))
    return (p >= t).astype(np.int64)


def accuracy_at(labels, probs, thresholds=0.5, task: str = "multilabel") -> float:
    """Accuracy of the decisions over known labels.

    Multi-label/binary: the share of known (image, label) pairs decided correctly (MedMNIST's definition for
    multi-label sets). Multi-class: the share of images whose arg-max is the labelled class.
    """
    y = _as_2d(labels, "labels")
    d = decisions(probs, thresholds, task)
    if task == "multiclass":
        known = ~np.isnan(y).any(axis=1)
        if not known.any():
            return math.nan
        return float((y[known].argmax(axis=1) == d[known].argmax(axis=1)).mean())
    known = ~np.isnan(y)
    if not known.any():
        return math.nan
    return float((d[known] == y[known]).mean())


def summarize(labels, probs, label_names, thresholds=0.5, task: str = "multilabel") -> dict:
    """A JSON-ready summary: mean AUC, accuracy, and per-label AUC with positive/negative counts."""
    y, p = _as_2d(labels, "labels"), _as_2d(probs, "probs")
    aucs = per_label_auc(y, p)
    per_label = {}
    for c, name in enumerate(label_names):
        col = y[:, c]
        per_label[name] = {
            "auc": None if math.isnan(aucs[c]) else float(aucs[c]),
            "positives": int((col == 1).sum()),
            "negatives": int((col == 0).sum()),
            "unknown": int(np.isnan(col).sum()),
        }
    m = mean_auc(y, p)
    acc = accuracy_at(y, p, thresholds, task)
    return {
        "n": int(len(y)),
        "task": task,
        "mean_auc": None if math.isnan(m) else m,
        "accuracy": None if math.isnan(acc) else acc,
        "per_label": per_label,
    }

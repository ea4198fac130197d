"""Referral by uncertainty: refer the most uncertain x% of cases to a reader and measure the retained ones.

A useful uncertainty ranks the model's mistakes first: as more of the most uncertain cases are referred, the AUC
and accuracy of the retained cases rise. :func:`referral_curve` computes that curve (Leibig et al., Sci Rep 2017,
"referral curve"); :func:`case_uncertainty` reduces per-label uncertainties to one score per case (the largest:
the case's most uncertain finding decides whether it is looked at). Pure functions on arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from medclass.metrics.classification import accuracy_at, mean_auc

__all__ = ["REFERRAL_FRACTIONS", "case_uncertainty", "referral_curve"]

#: the shares of cases referred that a report shows
REFERRAL_FRACTIONS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)


def case_uncertainty(uncertainty) -> np.ndarray:
    """One uncertainty per case ``(N,)``: the largest of its labels' (NaN labels ignored; 0 for an all-NaN row).

    Raises:
        ValueError: not a 1-D or 2-D array, or negative values.
    """
    u = np.asarray(uncertainty, dtype=np.float64)
    if u.ndim == 1:
        u = u[:, None]
    if u.ndim != 2:
        raise ValueError(f"uncertainty must be (N,) or (N, C), got shape {u.shape}")
    if np.any(u[~np.isnan(u)] < 0):
        raise ValueError("uncertainty must be >= 0 (a spread of probabilities)")
    filled = np.where(np.isnan(u), -np.inf, u).max(axis=1)
    return np.where(np.isfinite(filled), filled, 0.0)


def referral_curve(labels, probs, uncertainty, thresholds=0.5, task: str = "multilabel",
                   fractions: Sequence[float] = REFERRAL_FRACTIONS) -> dict:
    """AUC and accuracy of the retained cases as the most uncertain share ``fraction`` is referred.

    Args:
        labels: ``(N, C)`` 1/0/NaN.
        probs: ``(N, C)`` probabilities.
        uncertainty: ``(N, C)`` or ``(N,)`` (see :func:`case_uncertainty`).
        thresholds: decision thresholds (float or one per label) for the accuracy.
        task: ``multilabel``, ``binary`` or ``multiclass``.
        fractions: shares of cases referred, each in ``[0, 1)``; ``floor(fraction * N)`` cases are referred.
            Ties in uncertainty keep the cases' order (a stable sort).

    Returns:
        ``{"fractions", "referred" (cases), "retained" (cases), "mean_auc", "accuracy"}`` (lists, one entry per
        fraction; ``nan`` where the retained cases lack positives or negatives), ``"order"``: case indices, most
        uncertain first, and ``"score"``: each case's uncertainty.

    Raises:
        ValueError: shapes that differ, or a fraction outside ``[0, 1)``.
    """
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    if y.ndim == 1:
        y, p = y[:, None], p[:, None]
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and probs {p.shape} differ in shape")
    score = case_uncertainty(uncertainty)
    if score.shape[0] != y.shape[0]:
        raise ValueError(f"uncertainty has {score.shape[0]} cases, the labels {y.shape[0]}")
    order = np.argsort(-score, kind="stable")
    n = len(order)
    out: dict = {"fractions": [], "referred": [], "retained": [], "mean_auc": [], "accuracy": []}
    for f in fractions:
        f = float(f)
        if not 0.0 <= f < 1.0:
            raise ValueError(f"referral fractions must be in [0, 1), got {f}")
        k = int(math.floor(f * n + 1e-9))
        kept = np.sort(order[k:])
        out["fractions"].append(f)
        out["referred"].append(k)
        out["retained"].append(n - k)
        out["mean_auc"].append(mean_auc(y[kept], p[kept]) if len(kept) else math.nan)
        out["accuracy"].append(accuracy_at(y[kept], p[kept], thresholds, task) if len(kept) else math.nan)
    out["order"] = [int(i) for i in order]
    out["score"] = [float(s) for s in score]
    return out

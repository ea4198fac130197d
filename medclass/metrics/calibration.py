"""Calibration: reliability-diagram bins, expected calibration error, and temperature scaling.

Bins are ``n_bins`` equal-width intervals of [0, 1] with scikit-learn's convention (a probability on an inner
edge falls in the lower bin), so :func:`reliability` matches ``sklearn.calibration.calibration_curve``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from medclass.metrics.classification import known_pairs


def _bin_ids(probs: np.ndarray, n_bins: int) -> np.ndarray:
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges[1:-1], probs, side="left")


def reliability(labels, probs, n_bins: int = 10) -> dict[str, Any]:
    """Reliability-diagram data of one binary label (NaN labels excluded).

    Args:
        labels: ``(N,)`` 1/0/NaN (or 1/0 "correct" flags for a top-label diagram).
        probs: ``(N,)`` probabilities in [0, 1].
        n_bins: equal-width bins.

    Returns:
        ``{"confidence": mean probability per non-empty bin, "frequency": observed positive rate, "count",
        "lower", "upper" (bin edges), "ece", "n"}``; ``ece`` is ``nan`` without known labels.
    """
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    n_bins = int(n_bins)
    try:
        y, p = known_pairs(labels, probs, what="probabilities")
    except ValueError as exc:
        if "NaN or Inf" in str(exc):
            raise ValueError("probabilities must lie in [0, 1]") from exc
        raise
    if p.size and (p.min() < 0 or p.max() > 1):
        raise ValueError("probabilities must lie in [0, 1]")
    ids = _bin_ids(p, n_bins)
    count = np.bincount(ids, minlength=n_bins)
    conf = np.bincount(ids, weights=p, minlength=n_bins)
    freq = np.bincount(ids, weights=y, minlength=n_bins)
    nz = count > 0
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    conf_m, freq_m = conf[nz] / count[nz], freq[nz] / count[nz]
    ece = float(np.sum(count[nz] / len(y) * np.abs(freq_m - conf_m))) if len(y) else math.nan
    return {"confidence": conf_m.tolist(), "frequency": freq_m.tolist(), "count": count[nz].astype(int).tolist(),
            "lower": edges[:-1][nz].tolist(), "upper": edges[1:][nz].tolist(), "ece": ece, "n": int(len(y))}


def expected_calibration_error(labels, probs, n_bins: int = 10) -> float:
    """ECE of one binary label: the count-weighted mean ``|observed rate - mean probability|`` over bins."""
    return reliability(labels, probs, n_bins)["ece"]


def top_label(labels, probs) -> tuple[np.ndarray, np.ndarray]:
    """Multi-class ``(correct, confidence)`` of the arg-max class for rows with a known one-hot label."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    known = ~np.isnan(y).any(axis=1)
    y, p = y[known], p[known]
    correct = (p.argmax(axis=1) == y.argmax(axis=1)).astype(np.float64)
    return correct, p.max(axis=1)


def _activate(logits: np.ndarray, task: str) -> np.ndarray:
    if task == "multiclass":
        z = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)
    return 1.0 / (1.0 + np.exp(-logits))


def probabilities(logits, task: str = "multilabel", temperature: float = 1.0) -> np.ndarray:
    """Sigmoid (multi-label/binary) or softmax (multi-class) of ``logits / temperature``: ``(N, C)``."""
    z = np.asarray(logits, dtype=np.float64)
    return _activate(z / float(temperature), task)


def _nll(logits: np.ndarray, labels: np.ndarray, task: str, temperature: float) -> float:
    z = logits / temperature
    if task == "multiclass":
        known = ~np.isnan(labels).any(axis=1)
        z, y = z[known], labels[known]
        zmax = z.max(axis=1, keepdims=True)
        logsumexp = (zmax + np.log(np.exp(z - zmax).sum(axis=1, keepdims=True))).ravel()
        return float(np.mean(logsumexp - (z * y).sum(axis=1)))
    known = ~np.isnan(labels)
    z, y = z[known], labels[known]
    # binary cross-entropy with logits, numerically stable
    return float(np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))))


def fit_temperature(logits, labels, task: str = "multilabel", bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature ``T`` minimising the negative log-likelihood of ``logits / T`` (Guo et al., 2017).

    One scalar for all labels; NaN labels are excluded. A golden-section search on ``log T`` (the NLL is
    unimodal in ``T``).

    Args:
        logits: ``(N, C)`` raw network outputs.
        labels: ``(N, C)`` 1/0/NaN (one-hot rows for multi-class).
        task: ``multilabel``/``binary`` (sigmoid) or ``multiclass`` (softmax).
        bounds: the search interval of ``T``.

    Returns:
        ``T > 0`` (1.0 when there are no known labels).
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if z.shape != y.shape:
        raise ValueError(f"logits {z.shape} and labels {y.shape} differ in shape")
    if not np.all(np.isfinite(z)):
        raise ValueError("logits hold NaN or Inf values")
    if not (~np.isnan(y)).any():
        return 1.0
    a, b = math.log(bounds[0]), math.log(bounds[1])
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = _nll(z, y, task, math.exp(c)), _nll(z, y, task, math.exp(d))
    for _ in range(80):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = _nll(z, y, task, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = _nll(z, y, task, math.exp(d))
    return float(math.exp((a + b) / 2))


def brier_score(labels, probs) -> float:
    """Mean squared difference between probability and outcome (``sklearn.metrics.brier_score_loss``) over the
    known labels of one label; ``nan`` without known labels."""
    from sklearn.metrics import brier_score_loss

    y, p = known_pairs(labels, probs, what="probabilities", check_labels=True)
    if not len(y):
        return math.nan
    return float(brier_score_loss(y, np.clip(p, 0.0, 1.0)))


def calibration_fit(labels, probs, eps: float = 1e-6) -> dict[str, Any]:
    """Logistic recalibration of one label: calibration intercept and slope (Van Calster et al., 2019).

    The slope is ``b`` of ``logit P(y=1) = a + b * logit(p)`` (1: ideal; < 1: probabilities too extreme, as
    from overfitting). The intercept is calibration-in-the-large, ``a`` with the slope fixed at 1
    (``logit P(y=1) = a + logit(p)``; 0: ideal; > 0: probabilities too low on average). Both are maximum
    likelihood fits (scikit-learn's unpenalised logistic regression for the slope, a one-dimensional convex
    fit for the intercept).

    Args:
        labels: ``(N,)`` 1/0/NaN.
        probs: ``(N,)`` probabilities (clipped to ``[eps, 1 - eps]`` before the logit).
        eps: clipping.

    Returns:
        ``{"intercept", "slope", "n", "positives", "negatives"}``; ``nan`` with ``"not_estimable"`` (a reason)
        without positives or negatives, when the scores do not vary, or (the slope only) when they separate the
        classes perfectly.
    """
    from scipy.optimize import minimize_scalar
    from sklearn.linear_model import LogisticRegression

    y, p = known_pairs(labels, probs, what="probabilities", check_labels=True)
    pos, neg = int(y.sum()), int(len(y) - y.sum())
    out: dict[str, Any] = {"n": int(len(y)), "positives": pos, "negatives": neg,
                           "intercept": math.nan, "slope": math.nan}
    if pos == 0 or neg == 0:
        out["not_estimable"] = "no positive cases" if pos == 0 else "no negative cases"
        return out
    pc = np.clip(p, eps, 1 - eps)
    lp = np.log(pc / (1 - pc))
    if np.ptp(lp) < 1e-12:
        out["not_estimable"] = "all probabilities equal"
        return out
    sign = 2 * y - 1

    def nll(a: float) -> float:
        return float(np.logaddexp(0.0, -sign * (a + lp)).sum())

    out["intercept"] = float(minimize_scalar(nll, bounds=(-30, 30), method="bounded",
                                             options={"xatol": 1e-8}).x)
    if lp[y == 0].max() < lp[y == 1].min():
        out["not_estimable"] = "the probabilities separate the classes perfectly: the slope is unbounded"
        return out
    model = LogisticRegression(C=np.inf, solver="lbfgs", max_iter=1000, tol=1e-10).fit(lp[:, None], y)
    out["slope"] = float(model.coef_[0, 0])
    return out

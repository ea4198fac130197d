"""Operating points: ROC/PR curves, threshold choice on a validation split, and the statistics at a threshold.

Thresholds are chosen on validation data only where a label has at least ``min_positives`` positives and
negatives there; otherwise a documented fallback is used and flagged (:func:`fallback_threshold`).

Labels are ``(N,)`` or ``(N, C)`` arrays of 1 (positive), 0 (negative) or NaN (unknown, excluded per label);
scores are probabilities. A decision is positive when ``prob >= threshold``. A statistic whose denominator is
empty (e.g. sensitivity on a split without positives) is ``nan`` with a reason, never a silent 0 or 0.5.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medclass.metrics.classification import known_pairs

#: threshold methods :func:`choose_threshold` understands
METHODS = ("youden", "sensitivity", "specificity", "fixed")


def _known(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    return known_pairs(labels, scores, check_labels=True)


def _cumulative(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True and false positives when thresholding at each distinct score (descending)."""
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each distinct score
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    return tps, fps, s[last]


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve of one label.

    Returns:
        ``(fpr, tpr, thresholds)``, starting at ``(0, 0)`` with threshold ``inf``; point ``k`` is the result of
        ``score >= thresholds[k]``. Empty arrays when the known labels hold no positive or no negative.
    """
    y, s = _known(labels, scores)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    tps, fps, thr = _cumulative(y, s)
    return np.r_[0.0, fps / n_neg], np.r_[0.0, tps / n_pos], np.r_[np.inf, thr]


def precision_recall_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall at each distinct score (descending thresholds); empty without positives.

    Returns:
        ``(precision, recall, thresholds)``, ordered by decreasing threshold.
    """
    y, s = _known(labels, scores)
    n_pos = int(y.sum())
    if n_pos == 0 or len(y) == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    tps, fps, thr = _cumulative(y, s)
    return tps / (tps + fps), tps / n_pos, thr


def average_precision(labels, scores) -> float:
    """Average precision ``sum_k (R_k - R_{k-1}) P_k`` (scikit-learn's definition); ``nan`` without positives."""
    precision, recall, _ = precision_recall_curve(labels, scores)
    if len(recall) == 0:
        return math.nan
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _div(num: float, den: float) -> float:
    return float(num / den) if den > 0 else math.nan


def binary_stats(labels, decisions) -> dict[str, Any]:
    """Confusion counts and the statistics of 0/1 decisions for one label (NaN labels excluded).

    Returns:
        ``tp, fp, tn, fn`` and ``sensitivity, specificity, ppv, npv, f1, accuracy`` (``nan`` where undefined),
        plus ``undefined``: ``{statistic: reason}`` for each undefined statistic.
    """
    y, d = _known(labels, decisions)
    d = d >= 0.5
    pos = y == 1
    tp, fn = int((d & pos).sum()), int((~d & pos).sum())
    fp, tn = int((d & ~pos).sum()), int((~d & ~pos).sum())
    out: dict[str, Any] = {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
    out["sensitivity"] = _div(tp, tp + fn)
    out["specificity"] = _div(tn, tn + fp)
    out["ppv"] = _div(tp, tp + fp)
    out["npv"] = _div(tn, tn + fn)
    out["f1"] = _div(2 * tp, 2 * tp + fp + fn)
    out["accuracy"] = _div(tp + tn, tp + tn + fp + fn)
    reasons = {
        "sensitivity": "no positive cases",
        "specificity": "no negative cases",
        "ppv": "no positive decisions",
        "npv": "no negative decisions",
        "f1": "no positive cases and no positive decisions",
        "accuracy": "no known labels",
    }
    out["undefined"] = {k: r for k, r in reasons.items() if math.isnan(out[k])}
    return out


def parse_method(spec: Any) -> tuple[str, float | None]:
    """``'youden'``, ``'sensitivity:0.9'``, ``'specificity:0.95'`` or a number (a fixed threshold)."""
    if isinstance(spec, bool):
        raise TypeError(f"operating point must be a method or a threshold, got {spec!r}")
    if isinstance(spec, (int, float)):
        value = float(spec)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"fixed threshold must be a probability in [0, 1], got {value}")
        return "fixed", value
    if not isinstance(spec, str):
        raise TypeError(f"operating point must be a method name or a number, got {type(spec).__name__}: {spec!r}")
    text = spec.strip().lower()
    try:
        return parse_method(float(text))
    except ValueError as e:
        if "fixed threshold" in str(e):
            raise
    if text == "youden":
        return "youden", None
    name, sep, target = text.partition(":")
    if name in ("sensitivity", "specificity") and sep:
        try:
            value = float(target)
        except ValueError:
            value = math.nan
        if not 0.0 < value <= 1.0:
            raise ValueError(f"operating point {spec!r}: the target {name} must be in (0, 1]")
        return name, value
    raise ValueError(
        f"unknown operating point {spec!r}: use 'youden', 'sensitivity:<x>', 'specificity:<x>' or a threshold"
    )


def operating_point_specs(spec: Any, label_names: Sequence[str]) -> list[tuple[str, float | None]]:
    """One ``(method, value)`` per label from a single method/threshold, a list (one per label) or a mapping
    ``{label: method or threshold}`` (labels not named use ``youden``)."""
    names = list(label_names)
    if isinstance(spec, Mapping):
        unknown = sorted(set(map(str, spec)) - set(names))
        if unknown:
            raise ValueError(f"operating point names unknown labels {unknown}; labels are {names}")
        return [parse_method(spec.get(n, "youden")) for n in names]
    if isinstance(spec, (list, tuple, np.ndarray)):
        if len(spec) != len(names):
            raise ValueError(f"operating point list has {len(spec)} entries for {len(names)} labels ({names})")
        return [parse_method(v) for v in spec]
    return [parse_method(spec)] * len(names)


#: positives and negatives a label needs in the validation split for a threshold chosen on it (the bundles'
#: ``min_positives``)
MIN_POSITIVES = 10


def fallback_threshold(probs, prevalence: float | None, default: float = 0.5) -> tuple[float, str]:
    """The threshold used where the validation split has too few positives or negatives to choose one.

    With a training prevalence ``0 < prevalence < 1``: the validation-score quantile that calls that share of
    the validation images positive (the ``round(prevalence * n)``-th highest score, at least the highest), so the
    model flags as many images as the training data would lead one to expect. It uses the validation *scores*
    (all images) and the training labels, never the few validation positives, and unlike a fixed 0.5 it follows
    probabilities shifted by ``pos_weight`` or label smoothing. Otherwise (no prevalence, no validation scores,
    no training positive or negative): ``default``.

    Args:
        probs: ``(N,)`` validation probabilities of the label (known and unknown labels alike).
        prevalence: the label's prevalence among the training images with a known value, or ``None``.
        default: the threshold when the quantile cannot be used.

    Returns:
        ``(threshold, how)``: ``how`` says which rule gave it.
    """
    p = np.asarray(probs, dtype=np.float64).ravel()
    p = p[np.isfinite(p)]
    prev = math.nan if prevalence is None else float(prevalence)
    if math.isnan(prev):
        return float(default), f"fixed {default:g} (no training prevalence)"
    if not 0.0 < prev < 1.0:
        return float(default), f"fixed {default:g} (training prevalence {prev:.3g})"
    if not p.size:
        return float(default), f"fixed {default:g} (no validation scores)"
    k = max(1, int(round(float(prevalence) * p.size)))
    threshold = float(np.sort(p)[::-1][k - 1])
    return threshold, (f"validation-score quantile at the training prevalence {float(prevalence):.3g} "
                       f"({k} of {p.size} validation images called positive)")


def choose_threshold(labels, probs, method: str = "youden", value: float | None = None,
                     default: float = 0.5, min_positives: int = MIN_POSITIVES,
                     prevalence: float | None = None) -> dict[str, Any]:
    """Choose the decision threshold of one label on (validation) data, or fall back where the data is too thin.

    A threshold is chosen from the validation labels only when they hold at least ``min_positives`` positives
    *and* negatives; with fewer, a Youden or target threshold would be set by a handful of images (with 3
    positives the achievable sensitivities are 0, 1/3, 2/3 and 1). Then :func:`fallback_threshold` is used and
    the result says so (``chosen_by: "fallback"`` and the reason under ``fallback``).

    Args:
        labels: ``(N,)`` 1/0/NaN.
        probs: ``(N,)`` probabilities.
        method: ``youden`` (maximises sensitivity + specificity - 1), ``sensitivity`` (the highest threshold
            reaching ``value`` sensitivity, i.e. the best specificity there), ``specificity`` (the lowest
            threshold reaching ``value`` specificity) or ``fixed`` (``value`` itself, never a fallback).
        value: the target or the fixed threshold.
        default: the fallback threshold when the prevalence quantile cannot be used.
        min_positives: positives and negatives (each) needed to choose on the data; at least 1.
        prevalence: the label's training prevalence for the fallback (``None``: ``default``).

    Returns:
        ``{"threshold", "method", "target", "chosen_by" ("validation", "fallback" or "fixed"), "fallback" (the
        reason, or None), "min_positives", "sensitivity", "specificity" (validation statistics at the
        threshold), "n", "positives", "negatives"}``, plus ``"undefined"`` (a reason) when the split has no
        positive or no negative at all, and ``"training_prevalence"`` when given.
    """
    if method not in METHODS:
        raise ValueError(f"unknown threshold method {method!r}; one of {METHODS}")
    min_positives = max(1, int(min_positives))
    y, p = _known(labels, probs)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    out: dict[str, Any] = {"method": method, "target": value, "n": len(y), "positives": n_pos, "negatives": n_neg,
                           "min_positives": min_positives, "chosen_by": "validation", "fallback": None}
    if prevalence is not None:
        out["training_prevalence"] = float(prevalence)
    if method == "fixed":
        threshold = float(value)
        out["chosen_by"] = "fixed"
    elif n_pos < min_positives or n_neg < min_positives:
        if n_pos == 0 or n_neg == 0:
            out["undefined"] = f"{'no positive' if n_pos == 0 else 'no negative'} cases to choose a {method} " \
                               "threshold on"
        threshold, how = fallback_threshold(probs, prevalence, default)
        out["chosen_by"] = "fallback"
        out["fallback"] = (f"{n_pos} positive and {n_neg} negative validation cases (fewer than {min_positives}): "
                           f"{method} not chosen on them; threshold = {how}")
    else:
        fpr, tpr, thr = roc_curve(y, p)
        fpr, tpr, thr = fpr[1:], tpr[1:], thr[1:]  # drop the (inf) point that decides nothing positive
        if method == "youden":
            k = int(np.argmax(tpr - fpr))  # first maximum: the highest threshold reaching the best J
        elif method == "sensitivity":
            k = int(np.flatnonzero(tpr >= value - 1e-12)[0])
        else:
            ok = np.flatnonzero(1.0 - fpr >= value - 1e-12)
            k = int(ok[-1]) if ok.size else -1
            if k < 0:  # no threshold reaches it: decide nothing positive
                threshold = float(np.nextafter(thr[0], np.inf))
        if k >= 0:
            threshold = float(thr[k])
    threshold = min(max(threshold, 0.0), 1.0)
    stats = binary_stats(y, p >= threshold) if len(y) else {"sensitivity": math.nan, "specificity": math.nan}
    out.update(threshold=threshold, sensitivity=stats["sensitivity"], specificity=stats["specificity"])
    return out


def choose_thresholds(labels, probs, label_names: Sequence[str], spec: Any = "youden",
                      default: float = 0.5, min_positives: int = MIN_POSITIVES,
                      prevalence: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """:func:`choose_threshold` for every label of ``(N, C)`` labels and probabilities (see
    :func:`operating_point_specs` for ``spec``); ``prevalence`` holds one training prevalence per label."""
    y = np.asarray(labels, dtype=np.float64).reshape(len(labels), -1)
    p = np.asarray(probs, dtype=np.float64).reshape(len(probs), -1)
    if y.shape != p.shape or y.shape[1] != len(label_names):
        raise ValueError(f"labels {y.shape}, probabilities {p.shape} and {len(label_names)} label names disagree")
    if prevalence is not None and len(prevalence) != len(label_names):
        raise ValueError(f"{len(prevalence)} training prevalences for {len(label_names)} labels")
    specs = operating_point_specs(spec, label_names)
    return [{"label": n, **choose_threshold(y[:, c], p[:, c], m, v, default, min_positives,
                                            None if prevalence is None else prevalence[c])}
            for c, (n, (m, v)) in enumerate(zip(label_names, specs))]

"""The full evaluation of a set of predictions: one JSON-ready dictionary behind ``metrics.json``, the per-label
CSV and the report.

Honest with few cases:

* everything undefined (a label with no positives or no negatives among its known values, a statistic with an
  empty denominator) is ``None`` in the output with a reason under ``"undefined"``;
* every interval that cannot be computed, and the AUC of a label with fewer than ``min_positives`` test
  positives or negatives, is listed under ``"not_estimable"`` with the reason; an interval is never zero-width;
* proportions (sensitivity, specificity, PPV, NPV) get Wilson intervals, per-label AUCs DeLong intervals, the
  mean and micro-averaged AUC a percentile bootstrap resampling patients;
* the headline mean AUC averages only the labels with at least ``min_positives`` test positives and negatives
  and names them, and the ones it leaves out, with why.

NaN labels are excluded per label.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medclass.metrics.bootstrap import bootstrap_ci
from medclass.metrics.calibration import brier_score, calibration_fit, reliability, top_label
from medclass.metrics.classification import accuracy_at, binary_auc, decisions as make_decisions
from medclass.metrics import multiclass as mc
from medclass.metrics.intervals import delong_ci, proportion_ci
from medclass.metrics.operating_points import MIN_POSITIVES, average_precision, binary_stats
from medclass.metrics.subgroups import subgroup_metrics

#: statistics reported per label at the operating point
STATS = ("sensitivity", "specificity", "ppv", "npv", "f1", "accuracy")
#: the proportions with an interval: (statistic, numerator count, denominator counts)
PROPORTIONS = {"sensitivity": ("tp", ("tp", "fn")), "specificity": ("tn", ("tn", "fp")),
               "ppv": ("tp", ("tp", "fp")), "npv": ("tn", ("tn", "fn"))}


def to_json(value: Any) -> Any:
    """Recursively turn numpy values into Python ones and NaN/Inf into ``None`` (JSON ``null``)."""
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    return value


def _mean(values) -> float:
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    return float(v.mean()) if v.size else math.nan


def sparse_reason(positives: int, negatives: int, min_positives: int) -> str | None:
    """Why a label's AUC is not estimable with useful precision (``None`` when it is)."""
    if positives == 0:
        return "no positive test cases"
    if negatives == 0:
        return "no negative test cases"
    if positives < min_positives or negatives < min_positives:
        return f"{positives} positive and {negatives} negative test cases (fewer than {min_positives})"
    return None


def label_metrics(labels, probs, decisions, threshold: float | None, min_positives: int = MIN_POSITIVES,
                  level: float = 0.95, n_bins: int = 10, proportion_method: str = "wilson") -> dict[str, Any]:
    """Every per-label figure of one label, each with its interval and the counts behind it.

    Args:
        labels: ``(N,)`` 1/0/NaN.
        probs: ``(N,)`` probabilities.
        decisions: ``(N,)`` 0/1 decisions at ``threshold``.
        threshold: the operating point (``None`` for multi-class arg-max decisions).
        min_positives: test positives and negatives needed for the AUC to count as estimable.
        level: interval coverage.
        n_bins: reliability bins (for the ECE).
        proportion_method: ``wilson`` or ``exact`` (Clopper-Pearson).

    Returns:
        ``auc`` with ``auc_ci`` (DeLong; only with ``min_positives`` positives and negatives) and ``auc_se``,
        ``average_precision``, ``threshold``, the confusion
        counts, ``sensitivity``/``specificity``/``ppv``/``npv`` each with ``<name>_ci`` (Wilson or exact),
        ``f1``, ``accuracy``, ``ece``, ``brier``, ``calibration_intercept``, ``calibration_slope``,
        ``positives``, ``negatives``, ``unknown``, ``estimable`` (enough positives and negatives),
        ``undefined`` and ``not_estimable`` (``{figure: reason}``).
    """
    col = np.asarray(labels, dtype=np.float64).ravel()
    p = np.asarray(probs, dtype=np.float64).ravel()
    pos, neg = int((col == 1).sum()), int((col == 0).sum())
    undefined: dict[str, str] = {}
    not_estimable: dict[str, str] = {}
    auc = binary_auc(col, p)
    if math.isnan(auc):
        undefined["auc"] = "no positive cases" if pos == 0 else "no negative cases"
    ap = average_precision(col, p)
    if math.isnan(ap):
        undefined["average_precision"] = "no positive cases"
    stats = binary_stats(col, decisions)
    undefined.update(stats.pop("undefined"))
    rel = reliability(col, p, n_bins)
    if math.isnan(rel["ece"]):
        undefined["ece"] = "no known labels"
    out: dict[str, Any] = {"auc": auc, "auc_ci": [math.nan, math.nan], "auc_se": math.nan,
                           "average_precision": ap, "threshold": threshold, **stats}
    for name, (num, den) in PROPORTIONS.items():
        ci = proportion_ci(stats[num], sum(stats[d] for d in den), level, proportion_method)
        out[f"{name}_ci"] = [ci["lower"], ci["upper"]]
        if "not_estimable" in ci:
            not_estimable[f"{name}_ci"] = undefined.get(name, ci["not_estimable"])
    sparse = sparse_reason(pos, neg, min_positives)
    if sparse:  # DeLong's variance is asymptotic: from 2 placement values it is noise, so no interval at all
        not_estimable["auc"] = sparse
        not_estimable["auc_ci"] = undefined.get("auc", f"too few cases for an interval: {sparse}")
    else:
        dl = delong_ci(col, p, level)
        out["auc_ci"], out["auc_se"] = [dl["lower"], dl["upper"]], dl["se"]
        if "not_estimable" in dl:
            not_estimable["auc_ci"] = dl["not_estimable"]
    cal = calibration_fit(col, p)
    if "not_estimable" in cal:
        not_estimable["calibration_slope"] = cal["not_estimable"]
        if math.isnan(cal["intercept"]):
            not_estimable["calibration_intercept"] = cal["not_estimable"]
    brier = brier_score(col, p)
    if math.isnan(brier):
        undefined["brier"] = "no known labels"
    for key, reason in undefined.items():
        not_estimable.setdefault(key, reason)
    out.update(ece=rel["ece"], brier=brier, calibration_intercept=cal["intercept"],
               calibration_slope=cal["slope"], positives=pos, negatives=neg, unknown=int(np.isnan(col).sum()),
               estimable=sparse is None, undefined=undefined, not_estimable=not_estimable)
    return out


def evaluate_predictions(
    labels,
    probs,
    label_names: Sequence[str],
    task: str = "multilabel",
    thresholds: float | Sequence[float] = 0.5,
    patients: Sequence[Any] | None = None,
    groups: Mapping[str, Sequence[str]] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    n_bins: int = 10,
    min_positives: int = MIN_POSITIVES,
    proportion_method: str = "wilson",
) -> dict[str, Any]:
    """Evaluate probabilities against labels.

    Args:
        labels: ``(N, C)`` 1/0/NaN (one-hot rows for multi-class).
        probs: ``(N, C)`` probabilities.
        label_names: the ``C`` label names.
        task: ``multilabel``, ``binary`` or ``multiclass`` (decisions are the arg-max).
        thresholds: decision thresholds (a float or one per label), chosen on the validation split.
        patients: patient id per row; the bootstrap then resamples patients. ``None``: images.
        groups: ``{column: subgroup label per row}`` for the subgroup table.
        n_bootstrap: bootstrap resamples for the mean and micro AUC intervals (0: none).
        seed: bootstrap seed.
        level: confidence level of the intervals.
        n_bins: reliability-diagram bins.
        min_positives: test positives and negatives a label needs to enter the headline mean AUC (and for its
            AUC to count as estimable).
        proportion_method: ``wilson`` or ``exact`` intervals for sensitivity, specificity, PPV and NPV.

    Returns:
        A dictionary (NaN as ``nan``; pass it through :func:`to_json` before writing JSON) with ``n``, ``task``,
        ``label_names``, ``thresholds``, ``min_positives``, ``mean_auc`` (over the labels in
        ``mean_auc_labels``; the others are in ``mean_auc_excluded`` with the reason), ``mean_auc_ci``,
        ``micro_auc`` and ``micro_auc_ci`` (every known (image, label) pair pooled), ``mean_auc_all_defined``
        (the mean over every label with a defined AUC, however few its cases: for comparison only),
        ``headline`` (the same figures, each naming what it averages), ``accuracy``, ``macro`` (means over the
        ``mean_auc_labels``), ``per_label`` (see :func:`label_metrics`), ``calibration``, ``intervals``,
        ``bootstrap``, ``subgroups`` and, for multi-class, ``multiclass``.
    """
    names = [str(n) for n in label_names]
    y = np.asarray(labels, dtype=np.float64).reshape(len(labels), -1)
    p = np.asarray(probs, dtype=np.float64).reshape(len(probs), -1)
    if y.shape != p.shape or y.shape[1] != len(names):
        raise ValueError(f"labels {y.shape}, probabilities {p.shape} and {len(names)} label names disagree")
    min_positives = max(1, int(min_positives))
    c = len(names)
    t = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (c,)).copy()
    d = make_decisions(p, t, task)

    per_label = {name: label_metrics(y[:, k], p[:, k], d[:, k], float(t[k]) if task != "multiclass" else None,
                                     min_positives, level, n_bins, proportion_method)
                 for k, name in enumerate(names)}
    eligible = [n for n in names if per_label[n]["estimable"]]
    excluded = {n: per_label[n]["not_estimable"]["auc"] for n in names if not per_label[n]["estimable"]}
    idx = [names.index(n) for n in eligible]

    macro = {key: _mean(per_label[n][key] for n in eligible)
             for key in ("auc", "average_precision", *STATS, "ece", "brier")}
    calibration: dict[str, Any] = {"n_bins": n_bins, "per_label": {n: reliability(y[:, k], p[:, k], n_bins)
                                                                    for k, n in enumerate(names)}}
    calibration["brier"] = _mean(per_label[n]["brier"] for n in names)
    if task == "multiclass":
        correct, conf = top_label(y, p)
        calibration["top_label"] = reliability(correct, conf, n_bins)
        calibration["ece"] = calibration["top_label"]["ece"]
    else:
        calibration["ece"] = _mean(per_label[n]["ece"] for n in names)

    known = ~np.isnan(y)
    micro = binary_auc(y[known], p[known]) if task != "multiclass" else \
        binary_auc(y[known.all(axis=1)].ravel(), p[known.all(axis=1)].ravel())
    boot: dict[str, Any] = {"n_resamples": int(n_bootstrap), "seed": seed, "level": level}
    mean_auc = _mean(per_label[n]["auc"] for n in eligible)
    mean_auc_ci = [math.nan, math.nan]
    micro_ci = [math.nan, math.nan]
    if n_bootstrap and len(y):
        def statistic(rows):
            yy, pp = y[rows], p[rows]
            aucs = [binary_auc(yy[:, k], pp[:, k]) for k in idx]
            defined = [a for a in aucs if not math.isnan(a)]
            kk = ~np.isnan(yy)
            return np.r_[np.mean(defined) if defined and len(defined) == len(idx) else math.nan,
                         binary_auc(yy[kk], pp[kk])]

        ci = bootstrap_ci(statistic, len(y), patients, n_bootstrap, seed, level)
        if idx:
            mean_auc_ci = [ci["lower"][0], ci["upper"][0]]
        micro_ci = [ci["lower"][1], ci["upper"][1]]
        boot.update(unit=ci["unit"], units=ci["units"])

    rule = f"labels with at least {min_positives} positive and {min_positives} negative test cases"
    headline = {
        "mean_auc": {"value": mean_auc, "ci": mean_auc_ci, "labels": eligible, "n_labels": len(eligible),
                     "excluded": excluded, "n_excluded": len(excluded), "rule": rule,
                     "ci_method": "percentile bootstrap of patients (images without a patient id)"},
        "micro_auc": {"value": micro, "ci": micro_ci, "labels": names,
                      "pooled": "every known (image, label) pair of every label",
                      "ci_method": "percentile bootstrap of patients (images without a patient id)"},
        "mean_auc_all_defined": {"value": _mean(per_label[n]["auc"] for n in names),
                                 "labels": [n for n in names if not math.isnan(per_label[n]["auc"])],
                                 "note": "every label with a defined AUC however few its cases; not a headline"},
    }
    out: dict[str, Any] = {
        "n": int(len(y)),
        "task": task,
        "label_names": names,
        "thresholds": {n: (float(t[k]) if task != "multiclass" else None) for k, n in enumerate(names)},
        "min_positives": min_positives,
        "mean_auc": mean_auc,
        "mean_auc_ci": mean_auc_ci,
        "mean_auc_labels": eligible,
        "mean_auc_excluded": excluded,
        "micro_auc": micro,
        "micro_auc_ci": micro_ci,
        "mean_auc_all_defined": headline["mean_auc_all_defined"]["value"],
        "headline": headline,
        "accuracy": accuracy_at(y, p, t, task),
        "macro": macro,
        "per_label": per_label,
        "calibration": calibration,
        "intervals": {"level": level, "proportions": proportion_method, "auc": "delong",
                      "mean_auc": "bootstrap", "micro_auc": "bootstrap"},
        "bootstrap": boot,
        "subgroups": subgroup_metrics(y, p, d, names, groups) if groups else [],
    }
    if task == "multiclass":
        out["multiclass"] = {"confusion_matrix": mc.confusion_matrix(y, p).tolist(),
                             "per_class_accuracy": dict(zip(names, mc.per_class_accuracy(y, p).tolist())),
                             "balanced_accuracy": mc.balanced_accuracy(y, p), "macro_auc": mc.macro_auc(y, p),
                             "micro_auc": mc.micro_auc(y, p)}
    return out

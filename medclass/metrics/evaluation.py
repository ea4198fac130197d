"""The full evaluation of a set of predictions: one JSON-ready dictionary behind ``metrics.json``, the per-label
CSV and the report.

Everything undefined (a label with no positives or no negatives among its known values, a statistic with an
empty denominator) is ``None`` in the output together with a reason under ``"undefined"``; NaN labels are
excluded per label.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medclass.metrics.bootstrap import bootstrap_ci
from medclass.metrics.calibration import reliability, top_label
from medclass.metrics.classification import accuracy_at, binary_auc, decisions as make_decisions
from medclass.metrics.operating_points import average_precision, binary_stats
from medclass.metrics.subgroups import subgroup_metrics

#: statistics reported per label at the operating point
STATS = ("sensitivity", "specificity", "ppv", "npv", "f1", "accuracy")


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
        n_bootstrap: bootstrap resamples for the confidence intervals (0: none).
        seed: bootstrap seed.
        level: confidence level of the intervals.
        n_bins: reliability-diagram bins.

    Returns:
        A dictionary (NaN as ``nan``; pass it through :func:`to_json` before writing JSON) with ``n``, ``task``,
        ``label_names``, ``thresholds``, ``mean_auc``, ``mean_auc_ci``, ``accuracy``, ``macro`` (means over
        labels of AUC, AP, the operating-point statistics and ECE), ``per_label``, ``calibration``,
        ``bootstrap``, ``subgroups`` and, for multi-class, ``multiclass``.
    """
    names = [str(n) for n in label_names]
    y = np.asarray(labels, dtype=np.float64).reshape(len(labels), -1)
    p = np.asarray(probs, dtype=np.float64).reshape(len(probs), -1)
    if y.shape != p.shape or y.shape[1] != len(names):
        raise ValueError(f"labels {y.shape}, probabilities {p.shape} and {len(names)} label names disagree")
    c = len(names)
    t = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (c,)).copy()
    d = make_decisions(p, t, task)

    per_label: dict[str, Any] = {}
    for k, name in enumerate(names):
        col = y[:, k]
        pos, neg = int((col == 1).sum()), int((col == 0).sum())
        undefined: dict[str, str] = {}
        auc = binary_auc(col, p[:, k])
        if math.isnan(auc):
            undefined["auc"] = "no positive cases" if pos == 0 else "no negative cases"
        ap = average_precision(col, p[:, k])
        if math.isnan(ap):
            undefined["average_precision"] = "no positive cases"
        stats = binary_stats(col, d[:, k])
        undefined.update(stats.pop("undefined"))
        rel = reliability(col, p[:, k], n_bins)
        if math.isnan(rel["ece"]):
            undefined["ece"] = "no known labels"
        per_label[name] = {"auc": auc, "auc_ci": [math.nan, math.nan], "average_precision": ap,
                           "threshold": float(t[k]) if task != "multiclass" else None, **stats,
                           "sensitivity_ci": [math.nan, math.nan], "specificity_ci": [math.nan, math.nan],
                           "ece": rel["ece"], "positives": pos, "negatives": neg,
                           "unknown": int(np.isnan(col).sum()), "undefined": undefined}

    macro = {key: _mean(per_label[n][key] for n in names)
             for key in ("auc", "average_precision", *STATS, "ece")}
    calibration: dict[str, Any] = {"n_bins": n_bins, "per_label": {n: reliability(y[:, k], p[:, k], n_bins)
                                                                    for k, n in enumerate(names)}}
    if task == "multiclass":
        correct, conf = top_label(y, p)
        calibration["top_label"] = reliability(correct, conf, n_bins)
        calibration["ece"] = calibration["top_label"]["ece"]
    else:
        calibration["ece"] = macro["ece"]

    boot: dict[str, Any] = {"n_resamples": int(n_bootstrap), "seed": seed, "level": level}
    mean_auc = _mean(per_label[n]["auc"] for n in names)
    mean_auc_ci = [math.nan, math.nan]
    if n_bootstrap and len(y):
        def statistic(idx):
            yy, pp, dd = y[idx], p[idx], d[idx]
            aucs = np.array([binary_auc(yy[:, k], pp[:, k]) for k in range(c)])
            sens, spec = [], []
            for k in range(c):
                known = ~np.isnan(yy[:, k])
                yk, dk = yy[known, k], dd[known, k]
                npos, nneg = (yk == 1).sum(), (yk == 0).sum()
                sens.append(((dk == 1) & (yk == 1)).sum() / npos if npos else math.nan)
                spec.append(((dk == 0) & (yk == 0)).sum() / nneg if nneg else math.nan)
            defined = aucs[~np.isnan(aucs)]
            mean = defined.mean() if defined.size else math.nan
            return np.r_[aucs, sens, spec, mean]

        ci = bootstrap_ci(statistic, len(y), patients, n_bootstrap, seed, level)
        lo, hi = ci["lower"], ci["upper"]
        for k, n in enumerate(names):
            per_label[n]["auc_ci"] = [lo[k], hi[k]]
            per_label[n]["sensitivity_ci"] = [lo[c + k], hi[c + k]]
            per_label[n]["specificity_ci"] = [lo[2 * c + k], hi[2 * c + k]]
        mean_auc_ci = [lo[-1], hi[-1]]
        boot.update(unit=ci["unit"], units=ci["units"])

    out: dict[str, Any] = {
        "n": int(len(y)),
        "task": task,
        "label_names": names,
        "thresholds": {n: (float(t[k]) if task != "multiclass" else None) for k, n in enumerate(names)},
        "mean_auc": mean_auc,
        "mean_auc_ci": mean_auc_ci,
        "accuracy": accuracy_at(y, p, t, task),
        "macro": macro,
        "per_label": per_label,
        "calibration": calibration,
        "bootstrap": boot,
        "subgroups": subgroup_metrics(y, p, d, names, groups) if groups else [],
    }
    if task == "multiclass":
        from medclass.metrics import multiclass as mc

        out["multiclass"] = {"confusion_matrix": mc.confusion_matrix(y, p).tolist(),
                             "per_class_accuracy": dict(zip(names, mc.per_class_accuracy(y, p).tolist())),
                             "balanced_accuracy": mc.balanced_accuracy(y, p), "macro_auc": mc.macro_auc(y, p),
                             "micro_auc": mc.micro_auc(y, p)}
    return out

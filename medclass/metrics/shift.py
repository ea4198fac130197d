"""Data shift between the training data and an external set: image size, intensity and label prevalence.

Pure functions on arrays and counts; reading the images is the caller's (:mod:`medclass.report.external`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from medclass.metrics.intervals import proportion_ci

#: |standardised mean difference| of the per-image mean intensity above which the report flags a shift
SMD_FLAG = 0.5
#: p-value below which a prevalence difference (Fisher's exact test) is flagged
P_FLAG = 0.01


def image_stats(image) -> dict[str, Any]:
    """Size and intensity of one image as read: ``{"shape", "mean", "std", "p01", "p99", "max"}``."""
    a = np.asarray(image, dtype=np.float64)
    flat = a[np.isfinite(a)]
    if not flat.size:
        return {"shape": list(a.shape), "mean": math.nan, "std": math.nan, "p01": math.nan, "p99": math.nan,
                "max": math.nan}
    p01, p99 = np.percentile(flat, [1, 99])
    return {"shape": list(a.shape), "mean": float(flat.mean()), "std": float(flat.std()), "p01": float(p01),
            "p99": float(p99), "max": float(flat.max())}


def _quartiles(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=np.float64)
    if not v.size:
        return {"median": math.nan, "q1": math.nan, "q3": math.nan}
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return {"median": float(med), "q1": float(q1), "q3": float(q3)}


def summarize_images(per_image: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Summary of :func:`image_stats` rows: image count, the commonest shapes, and median [IQR] of the per-image
    mean, standard deviation and 99th percentile, and the largest value (a bit-depth hint)."""
    shapes = Counter(tuple(r["shape"]) for r in per_image)
    return {
        "images": len(per_image),
        "shapes": [{"shape": list(s), "images": n} for s, n in shapes.most_common(5)],
        "distinct_shapes": len(shapes),
        "mean": _quartiles([r["mean"] for r in per_image]),
        "std": _quartiles([r["std"] for r in per_image]),
        "p99": _quartiles([r["p99"] for r in per_image]),
        "max": float(max((r["max"] for r in per_image if math.isfinite(r["max"])), default=math.nan)),
    }


def intensity_shift(reference: Sequence[float], other: Sequence[float]) -> dict[str, Any]:
    """How far the per-image mean intensities of ``other`` lie from ``reference``.

    Returns:
        ``{"smd"`` (standardised mean difference, other minus reference over the pooled SD), ``"ks"`` and
        ``"ks_p_value"`` (two-sample Kolmogorov-Smirnov, :func:`scipy.stats.ks_2samp`), ``"flagged"``
        (``|smd| > SMD_FLAG``)}; ``nan`` with fewer than two values on a side.
    """
    a = np.asarray([x for x in reference if math.isfinite(x)], dtype=np.float64)
    b = np.asarray([x for x in other if math.isfinite(x)], dtype=np.float64)
    if a.size < 2 or b.size < 2:
        return {"smd": math.nan, "ks": math.nan, "ks_p_value": math.nan, "flagged": False,
                "not_estimable": "fewer than two images on a side"}
    pooled = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    smd = float((b.mean() - a.mean()) / pooled) if pooled > 0 else (0.0 if a.mean() == b.mean() else math.inf)
    ks = stats.ks_2samp(a, b)
    return {"smd": smd, "ks": float(ks.statistic), "ks_p_value": float(ks.pvalue), "flagged": abs(smd) > SMD_FLAG}


def prevalence_shift(label_names: Sequence[str], reference, other, level: float = 0.95) -> dict[str, dict]:
    """Per label: prevalence in the reference (training) and other (external) labels, each with its Wilson
    interval, and Fisher's exact test of the difference.

    Args:
        label_names: the ``C`` names.
        reference: ``(N, C)`` 1/0/NaN.
        other: ``(M, C)`` 1/0/NaN.
        level: interval coverage.

    Returns:
        ``{label: {"training": {"positives", "known", "prevalence", "ci"}, "external": {...}, "p_value",
        "flagged"}}`` (flagged: p below :data:`P_FLAG`).
    """
    ya = np.asarray(reference, dtype=np.float64).reshape(-1, len(label_names))
    yb = np.asarray(other, dtype=np.float64).reshape(-1, len(label_names))
    out = {}
    for k, name in enumerate(label_names):
        row = {}
        counts = []
        for key, y in (("training", ya[:, k]), ("external", yb[:, k])):
            pos, known = int((y == 1).sum()), int((~np.isnan(y)).sum())
            ci = proportion_ci(pos, known, level)
            row[key] = {"positives": pos, "known": known, "prevalence": ci["value"], "ci": [ci["lower"], ci["upper"]]}
            counts.append((pos, known - pos))
        if all(sum(c) > 0 for c in counts):
            p = float(stats.fisher_exact([list(counts[0]), list(counts[1])]).pvalue)
        else:
            p = math.nan
        row.update(p_value=p, flagged=bool(p < P_FLAG) if math.isfinite(p) else False)
        out[str(name)] = row
    return out

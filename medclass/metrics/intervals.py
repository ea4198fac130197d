"""Confidence intervals and tests that stay honest with few cases: Wilson / Clopper-Pearson intervals for
proportions, DeLong's variance of the AUC (one model, two models on the same cases) and McNemar's test for
paired decisions.

Where a figure cannot be estimated (an empty denominator, fewer than two positives or negatives for DeLong, a
zero variance), the functions return ``nan`` bounds together with a reason, never a zero-width interval.

References:
    Newcombe RG (1998). Two-sided confidence intervals for the single proportion: comparison of seven methods.
    Stat Med 17:857-872 (the worked examples the tests check).
    DeLong ER, DeLong DM, Clarke-Pearson DL (1988). Comparing the areas under two or more correlated receiver
    operating characteristic curves: a nonparametric approach. Biometrics 44:837-845.
    Sun X, Xu W (2014). Fast implementation of DeLong's algorithm for comparing the areas under correlated
    receiver operating characteristic curves. IEEE Signal Process Lett 21:1389-1393.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

#: proportion interval methods (scipy.stats.binomtest(...).proportion_ci names)
PROPORTION_METHODS = ("wilson", "exact")


def proportion_ci(successes: int, total: int, level: float = 0.95, method: str = "wilson") -> dict[str, Any]:
    """Interval of a binomial proportion ``successes / total`` (sensitivity, specificity, PPV, NPV).

    Args:
        successes: the numerator count.
        total: the denominator count.
        level: coverage.
        method: ``wilson`` (score interval without continuity correction, Newcombe's method 3) or ``exact``
            (Clopper-Pearson, method 5); both from :func:`scipy.stats.binomtest`.

    Returns:
        ``{"value", "lower", "upper", "successes", "total", "method"}``; with ``total == 0`` the value and bounds
        are ``nan`` and ``"not_estimable"`` holds the reason.
    """
    if method not in PROPORTION_METHODS:
        raise ValueError(f"unknown proportion interval method {method!r}; one of {PROPORTION_METHODS}")
    k, n = int(successes), int(total)
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"a proportion needs 0 <= successes <= total, got {k}/{n}")
    out: dict[str, Any] = {"successes": k, "total": n, "method": method}
    if n == 0:
        return {**out, "value": math.nan, "lower": math.nan, "upper": math.nan,
                "not_estimable": "empty denominator (no cases)"}
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=level, method=method)
    return {**out, "value": k / n, "lower": float(ci.low), "upper": float(ci.high)}


def _midranks(x: np.ndarray) -> np.ndarray:
    """Mid-ranks (1-based, ties averaged) along the last axis: ``(K, M)`` -> ``(K, M)``."""
    return stats.rankdata(x, axis=-1)


def _placements(positive: np.ndarray, negative: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fast DeLong (Sun & Xu 2014, Algorithm 2): AUCs and structural components of ``K`` score sets.

    Args:
        positive: ``(K, m)`` scores of the positive cases.
        negative: ``(K, n)`` scores of the negative cases.

    Returns:
        ``(auc (K,), v10 (K, m), v01 (K, n))``: ``v10[k, i]`` is the share of negatives that positive ``i``
        outscores (ties count one half), ``v01[k, j]`` the share of positives that outscore negative ``j``.
    """
    m, n = positive.shape[1], negative.shape[1]
    tx, ty = _midranks(positive), _midranks(negative)
    tz = _midranks(np.concatenate([positive, negative], axis=1))
    auc = (tz[:, :m].sum(axis=1) / m - (m + 1) / 2.0) / n
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    return auc, v10, v01


def delong_covariance(labels, scores) -> dict[str, Any]:
    """AUCs and DeLong's covariance matrix for one or more score sets on the same cases.

    Args:
        labels: ``(N,)`` 1/0/NaN (NaN rows are dropped).
        scores: ``(N,)`` or ``(K, N)`` scores (K models on the same cases); higher means more likely positive.

    Returns:
        ``{"auc": (K,), "cov": (K, K), "positives", "negatives"}``; ``auc`` and ``cov`` are ``nan`` with
        ``"not_estimable"`` (a reason) when there are fewer than two positives or two negatives (the
        structural-component variances need two of each).
    """
    y = np.asarray(labels, dtype=np.float64).ravel()
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if s.shape[1] != y.shape[0]:
        raise ValueError(f"labels ({y.shape[0]}) and scores ({s.shape[1]} per set) differ in length")
    keep = ~np.isnan(y)
    y, s = y[keep], s[:, keep]
    if not np.all(np.isfinite(s)):
        raise ValueError("scores hold NaN or Inf values")
    if not np.all(np.isin(y, (0.0, 1.0))):
        raise ValueError("labels must be 1, 0 or NaN")
    m, n = int((y == 1).sum()), int((y == 0).sum())
    k = s.shape[0]
    out: dict[str, Any] = {"positives": m, "negatives": n}
    if m < 2 or n < 2:
        out.update(auc=np.full(k, math.nan), cov=np.full((k, k), math.nan),
                   not_estimable=f"DeLong needs at least 2 positives and 2 negatives ({m} positive, {n} negative)")
        if m >= 1 and n >= 1:
            out["auc"] = _placements(s[:, y == 1], s[:, y == 0])[0]
        return out
    auc, v10, v01 = _placements(s[:, y == 1], s[:, y == 0])
    s10 = np.atleast_2d(np.cov(v10))
    s01 = np.atleast_2d(np.cov(v01))
    out.update(auc=auc, cov=s10 / m + s01 / n)
    return out


def delong_ci(labels, scores, level: float = 0.95) -> dict[str, Any]:
    """The AUC of one score set with its DeLong interval ``auc +- z * se``, clipped to [0, 1].

    Returns:
        ``{"auc", "se", "lower", "upper", "positives", "negatives", "method": "delong"}``; bounds are ``nan``
        with ``"not_estimable"`` when DeLong needs more cases or the variance is zero (every positive outscores
        every negative: the data then cannot say how far below 1 the AUC may be).
    """
    r = delong_covariance(labels, scores)
    auc = float(r["auc"][0])
    out: dict[str, Any] = {"auc": auc, "positives": r["positives"], "negatives": r["negatives"],
                           "method": "delong", "level": level}
    if "not_estimable" in r:
        return {**out, "se": math.nan, "lower": math.nan, "upper": math.nan, "not_estimable": r["not_estimable"]}
    var = float(r["cov"][0, 0])
    if not var > 1e-15:
        why = "perfect separation" if auc in (0.0, 1.0) else "all scores tied"
        return {**out, "se": 0.0, "lower": math.nan, "upper": math.nan,
                "not_estimable": f"DeLong variance is zero ({why}); too few cases for an interval"}
    se = math.sqrt(var)
    z = float(stats.norm.ppf(0.5 + level / 2))
    return {**out, "se": se, "lower": float(max(0.0, auc - z * se)), "upper": float(min(1.0, auc + z * se))}


def delong_test(labels, scores_a, scores_b, level: float = 0.95) -> dict[str, Any]:
    """DeLong's paired test of two AUCs on the same cases (``H0: AUC_a == AUC_b``).

    Returns:
        ``{"auc_a", "auc_b", "difference" (a - b), "se", "lower", "upper" (interval of the difference), "z",
        "p_value", "positives", "negatives"}``. Identical scores give difference 0 and p-value 1. Without enough
        cases the statistics are ``nan`` and ``"not_estimable"`` holds the reason.
    """
    r = delong_covariance(labels, np.stack([np.asarray(scores_a, float).ravel(), np.asarray(scores_b, float).ravel()]))
    a, b = (float(v) for v in r["auc"])
    out: dict[str, Any] = {"auc_a": a, "auc_b": b, "difference": a - b, "positives": r["positives"],
                           "negatives": r["negatives"], "method": "delong paired", "level": level}
    nan = dict(se=math.nan, lower=math.nan, upper=math.nan, z=math.nan, p_value=math.nan)
    if "not_estimable" in r:
        return {**out, **nan, "not_estimable": r["not_estimable"]}
    cov = r["cov"]
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    if not var > 1e-15:
        if abs(a - b) < 1e-12:  # same ranking of the cases: no difference to test
            return {**out, "se": 0.0, "lower": 0.0, "upper": 0.0, "z": 0.0, "p_value": 1.0,
                    "identical": "both score sets rank every case alike: no difference"}
        return {**out, **nan, "not_estimable": "the variance of the difference is zero"}
    se = math.sqrt(var)
    z = (a - b) / se
    zq = float(stats.norm.ppf(0.5 + level / 2))
    return {**out, "se": se, "lower": float(a - b - zq * se), "upper": float(a - b + zq * se), "z": z,
            "p_value": float(2 * stats.norm.sf(abs(z)))}


def mcnemar_test(correct_a, correct_b, exact_below: int = 25) -> dict[str, Any]:
    """McNemar's test of two classifiers' paired decisions on the same cases.

    Args:
        correct_a: ``(N,)`` bool, model A decided case ``i`` correctly.
        correct_b: ``(N,)`` bool, model B decided case ``i`` correctly.
        exact_below: with fewer discordant pairs than this, the exact binomial test (``scipy.stats.binomtest``,
            two-sided, p = 1/2); otherwise the chi-square statistic with continuity correction (Edwards).

    Returns:
        ``{"only_a" (A right, B wrong), "only_b", "both", "neither", "discordant", "statistic", "p_value",
        "method"}``. Without discordant pairs the models decide alike: p-value 1.
    """
    a = np.asarray(correct_a, dtype=bool).ravel()
    b = np.asarray(correct_b, dtype=bool).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired decisions differ in length: {a.shape[0]} vs {b.shape[0]}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    out: dict[str, Any] = {"only_a": only_a, "only_b": only_b, "both": int((a & b).sum()),
                           "neither": int((~a & ~b).sum()), "discordant": only_a + only_b}
    d = only_a + only_b
    if d == 0:
        return {**out, "statistic": 0.0, "p_value": 1.0, "method": "no discordant pairs"}
    if d < exact_below:
        p = stats.binomtest(only_a, d, 0.5).pvalue
        return {**out, "statistic": float(only_a), "p_value": float(min(1.0, p)), "method": "exact binomial"}
    chi2 = (abs(only_a - only_b) - 1) ** 2 / d
    return {**out, "statistic": float(chi2), "p_value": float(stats.chi2.sf(chi2, 1)),
            "method": "chi-square, continuity corrected"}

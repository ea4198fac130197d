"""Wilson / exact intervals against Newcombe's published worked examples and the Wilson formula; DeLong's
variance against a hand computation, an O(m*n) reference of DeLong's definition and a bootstrap; DeLong's
paired test and McNemar's test on constructed data with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from medclass.metrics import delong_ci, delong_covariance, delong_test, mcnemar_test, proportion_ci

# Newcombe (1998), Stat Med 17:857-872, Table I: 95% intervals for 81/263, 15/148, 0/20 and 1/29;
# method 3 (Wilson score, no continuity correction) and method 5 (Clopper-Pearson "exact")
NEWCOMBE = [((81, 263), (0.2553, 0.3662), (0.2527, 0.3676)),
            ((15, 148), (0.0624, 0.1605), (0.0578, 0.1617)),
            ((0, 20), (0.0000, 0.1611), (0.0000, 0.1684)),
            ((1, 29), (0.0061, 0.1718), (0.0009, 0.1776))]


@pytest.mark.parametrize("counts,wilson,exact", NEWCOMBE)
def test_proportion_intervals_match_newcombes_worked_examples(counts, wilson, exact):
    k, n = counts
    w = proportion_ci(k, n, method="wilson")
    e = proportion_ci(k, n, method="exact")
    assert (round(w["lower"], 4), round(w["upper"], 4)) == wilson
    assert (round(e["lower"], 4), round(e["upper"], 4)) == exact
    assert w["value"] == pytest.approx(k / n)


def test_wilson_matches_the_score_formula_and_is_never_zero_width():
    z = stats.norm.ppf(0.975)
    for k, n in [(0, 3), (3, 3), (1, 2), (7, 40), (40, 40)]:
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        ci = proportion_ci(k, n)
        assert ci["lower"] == pytest.approx(max(0.0, centre - half), abs=1e-12)
        assert ci["upper"] == pytest.approx(min(1.0, centre + half), abs=1e-12)
        assert ci["upper"] - ci["lower"] > 0.05  # 3/3 is not [1.000, 1.000]
    empty = proportion_ci(0, 0)
    assert math.isnan(empty["value"]) and math.isnan(empty["lower"]) and "no cases" in empty["not_estimable"]
    with pytest.raises(ValueError):
        proportion_ci(4, 3)


def test_delong_by_hand():
    # positives 0.9, 0.8; negatives 0.7, 0.85, 0.1. Placements: V10 = [1, 2/3]; V01 = [1, 1/2, 1].
    # AUC 5/6; S10 = var([1, 2/3]) = 1/18; S01 = var([1, 1/2, 1]) = 1/12; Var = S10/2 + S01/3 = 1/18
    y = [1, 1, 0, 0, 0]
    s = [0.9, 0.8, 0.7, 0.85, 0.1]
    r = delong_ci(y, s)
    assert r["auc"] == pytest.approx(5 / 6) and r["se"] == pytest.approx(math.sqrt(1 / 18))
    assert r["lower"] == pytest.approx(5 / 6 - stats.norm.ppf(0.975) * math.sqrt(1 / 18))
    assert r["upper"] == 1.0  # clipped


def _delong_reference(y, scores):
    """DeLong et al. (1988) straight from the definition: psi(X, Y) over every positive/negative pair."""
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    psi = (pos[:, :, None] > neg[:, None, :]) + 0.5 * (pos[:, :, None] == neg[:, None, :])  # (K, m, n)
    v10, v01 = psi.mean(axis=2), psi.mean(axis=1)
    return psi.mean(axis=(1, 2)), np.cov(v10) / m + np.cov(v01) / n


def test_fast_delong_equals_the_definition_with_ties_and_several_models():
    rng = np.random.default_rng(5)
    y = (rng.random(300) < 0.3).astype(float)
    a = np.round(y + rng.normal(size=300), 1)  # rounded: many ties
    b = np.round(0.5 * y + rng.normal(size=300), 1)
    c = a + 0.3 * rng.normal(size=300)
    fast = delong_covariance(y, np.stack([a, b, c]))
    auc, cov = _delong_reference(y, np.stack([a, b, c]))
    assert fast["auc"] == pytest.approx(auc, abs=1e-12)
    assert fast["cov"] == pytest.approx(cov, abs=1e-12)
    assert fast["auc"][0] == pytest.approx(skm.roc_auc_score(y, a))


def test_delong_standard_error_agrees_with_a_stratified_bootstrap():
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(150), np.zeros(250)]
    s = rng.normal(1.0 * y, 1)
    r = delong_ci(y, s)
    pi, ni = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    boot = []
    for _ in range(1500):
        idx = np.r_[rng.choice(pi, pi.size), rng.choice(ni, ni.size)]
        boot.append(skm.roc_auc_score(y[idx], s[idx]))
    assert r["se"] == pytest.approx(np.std(boot), rel=0.1)


def test_delong_says_when_it_cannot_give_an_interval():
    one = delong_ci([1, 0, 0, 0], [0.9, 0.1, 0.2, 0.3])
    assert math.isnan(one["lower"]) and "at least 2 positives" in one["not_estimable"]
    perfect = delong_ci([1, 1, 1, 0, 0, 0], [0.9, 0.8, 0.7, 0.3, 0.2, 0.1])
    assert perfect["auc"] == 1.0 and math.isnan(perfect["lower"]) and math.isnan(perfect["upper"])
    assert "perfect separation" in perfect["not_estimable"]  # never [1.000, 1.000]


def test_paired_delong_finds_a_known_difference_and_none_for_identical_scores():
    rng = np.random.default_rng(2)
    y = (rng.random(400) < 0.4).astype(float)
    good = y * 1.5 + rng.normal(size=400)
    weak = y * 0.3 + rng.normal(size=400)
    d = delong_test(y, good, weak)
    assert d["difference"] == pytest.approx(skm.roc_auc_score(y, good) - skm.roc_auc_score(y, weak))
    assert d["p_value"] < 1e-6 and d["lower"] > 0
    # the z statistic is the difference over the reference covariance's standard error
    _, cov = _delong_reference(y, np.stack([good, weak]))
    assert d["z"] == pytest.approx(d["difference"] / math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]))
    same = delong_test(y, good, good)
    assert same["difference"] == 0.0 and same["p_value"] == 1.0
    noise = delong_test(y, good, good + 1e-3 * rng.normal(size=400))
    assert noise["p_value"] > 0.05


def test_mcnemar_exact_and_chi_square():
    # 2 discordant pairs both one way: exact two-sided binomial p = 2 * 0.5^2 = 0.5
    a = np.array([1, 1, 1, 1, 0, 0], bool)
    b = np.array([1, 1, 0, 0, 0, 0], bool)
    m = mcnemar_test(a, b)
    assert (m["only_a"], m["only_b"], m["both"], m["neither"]) == (2, 0, 2, 2)
    assert m["method"] == "exact binomial" and m["p_value"] == pytest.approx(0.5)
    # 30 vs 10 discordant: chi-square with continuity correction (|30-10|-1)^2/40
    a = np.r_[np.ones(30), np.zeros(10), np.ones(50)].astype(bool)
    b = np.r_[np.zeros(30), np.ones(10), np.ones(50)].astype(bool)
    m = mcnemar_test(a, b)
    assert m["statistic"] == pytest.approx(19 ** 2 / 40)
    assert m["p_value"] == pytest.approx(stats.chi2.sf(19 ** 2 / 40, 1))
    assert mcnemar_test(a, a)["p_value"] == 1.0

"""Evaluation that stays honest with few cases, on constructed scores where the answer is known: thresholds fall
back (and say so) below min_positives, sparse figures are "not estimable" rather than precise-looking, the
headline mean names what it averages, calibration beyond ECE, and the data-shift summary."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from medclass.metrics import (
    brier_score,
    calibration_fit,
    choose_threshold,
    choose_thresholds,
    evaluate_predictions,
    fallback_threshold,
    to_json,
)
from medclass.metrics.shift import intensity_shift, prevalence_shift, summarize_images, image_stats


def _scores(n_pos: int, n_neg: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n_pos), np.zeros(n_neg)]
    return y, 1 / (1 + np.exp(-(2.0 * y - 1.0 + rng.normal(size=y.size))))


def test_three_validation_positives_fall_back_to_the_prevalence_quantile_and_say_so():
    y, p = _scores(3, 97)
    out = choose_threshold(y, p, "youden", min_positives=10, prevalence=0.1)
    assert out["chosen_by"] == "fallback" and out["positives"] == 3
    assert "3 positive and 97 negative validation cases (fewer than 10)" in out["fallback"]
    assert "training prevalence 0.1" in out["fallback"]
    # the 10th highest validation score: 10 of the 100 validation images called positive
    assert out["threshold"] == pytest.approx(np.sort(p)[::-1][9])
    assert (p >= out["threshold"]).sum() == 10
    # what Youden on those 3 positives would have chosen differs, and is not used
    youden = choose_threshold(y, p, "youden", min_positives=1)
    assert youden["chosen_by"] == "validation" and youden["threshold"] != out["threshold"]
    # without a training prevalence: the fixed 0.5, and the reason names it
    plain = choose_threshold(y, p, "sensitivity", 0.9, min_positives=10)
    assert plain["threshold"] == 0.5 and "fixed 0.5 (no training prevalence)" in plain["fallback"]
    assert fallback_threshold(p, 0.0) == (0.5, "fixed 0.5 (training prevalence 0)")


def test_enough_validation_cases_choose_youden_as_before():
    y, p = _scores(12, 88)
    out = choose_threshold(y, p, "youden", min_positives=10, prevalence=0.05)
    fpr, tpr, thr = skm.roc_curve(y, p, drop_intermediate=False)
    assert out["chosen_by"] == "validation" and out["fallback"] is None
    assert out["threshold"] == pytest.approx(thr[1:][np.argmax((tpr - fpr)[1:])])
    fixed = choose_threshold(y[:5], p[:5], "fixed", 0.3)  # a fixed threshold needs no data
    assert fixed["chosen_by"] == "fixed" and fixed["threshold"] == 0.3
    many = choose_thresholds(np.c_[y, np.r_[np.ones(3), np.zeros(97)]], np.c_[p, p], ["a", "b"],
                             min_positives=10, prevalence=[0.1, 0.03])
    assert [c["chosen_by"] for c in many] == ["validation", "fallback"]


def _sparse_set():
    """Four labels on 200 test images: 'common' (40+), 'rare' (4+), 'none' (0+), 'perfect' (3+, all found)."""
    rng = np.random.default_rng(4)
    n = 200
    y = np.zeros((n, 4))
    y[:40, 0] = 1
    y[rng.choice(n, 4, replace=False), 1] = 1
    y[:3, 3] = 1
    p = 1 / (1 + np.exp(-(1.5 * y - 1.0 + rng.normal(size=y.shape))))
    p[:3, 3] = 0.99
    return y, p, ["common", "rare", "none", "perfect"]


def test_no_positives_is_not_estimable_and_nothing_is_zero_width():
    y, p, names = _sparse_set()
    out = to_json(evaluate_predictions(y, p, names, thresholds=0.5, n_bootstrap=0, min_positives=10))
    none = out["per_label"]["none"]
    assert none["auc"] is None and none["sensitivity"] is None and none["auc_ci"] == [None, None]
    assert none["not_estimable"]["auc"] == "no positive test cases"
    assert none["not_estimable"]["sensitivity_ci"] == "no positive cases"
    rare = out["per_label"]["rare"]
    assert rare["auc"] is not None and rare["auc_ci"] == [None, None] and not rare["estimable"]
    assert rare["not_estimable"]["auc"] == "4 positive and 196 negative test cases (fewer than 10)"
    perfect = out["per_label"]["perfect"]
    assert perfect["sensitivity"] == 1.0 and perfect["tp"] == 3
    lo, hi = perfect["sensitivity_ci"]
    assert hi == 1.0 and lo == pytest.approx(0.4385, abs=1e-4)  # Wilson 3/3: not [1.000, 1.000]
    for name in names:  # no interval anywhere is zero-width
        for key in ("auc_ci", "sensitivity_ci", "specificity_ci", "ppv_ci", "npv_ci"):
            ci = out["per_label"][name][key]
            assert ci == [None, None] or ci[1] - ci[0] > 0.01, (name, key, ci)
    common = out["per_label"]["common"]
    assert common["estimable"] and common["auc_ci"][0] < common["auc"] < common["auc_ci"][1]


def test_headline_mean_excludes_and_counts_the_sparse_labels():
    y, p, names = _sparse_set()
    out = to_json(evaluate_predictions(y, p, names, thresholds=0.5, n_bootstrap=100, min_positives=10))
    assert out["mean_auc_labels"] == ["common"]
    assert out["mean_auc"] == pytest.approx(skm.roc_auc_score(y[:, 0], p[:, 0]))
    assert sorted(out["mean_auc_excluded"]) == ["none", "perfect", "rare"]
    head = out["headline"]["mean_auc"]
    assert head["n_labels"] == 1 and head["n_excluded"] == 3 and "at least 10 positive" in head["rule"]
    defined = [skm.roc_auc_score(y[:, k], p[:, k]) for k in (0, 1, 3)]
    assert out["mean_auc_all_defined"] == pytest.approx(np.mean(defined))  # the old figure, kept apart
    assert out["mean_auc_ci"][0] < out["mean_auc"] < out["mean_auc_ci"][1]
    # micro average: every known (image, label) pair pooled, as scikit-learn's average="micro"
    assert out["micro_auc"] == pytest.approx(skm.roc_auc_score(y, p, average="micro"))
    # with a lower bar the rare labels come in
    low = evaluate_predictions(y, p, names, thresholds=0.5, n_bootstrap=0, min_positives=3)
    assert low["mean_auc_labels"] == ["common", "rare", "perfect"]


def test_brier_score_and_calibration_intercept_and_slope():
    rng = np.random.default_rng(0)
    lp = rng.normal(0, 1.5, 20000)
    p = 1 / (1 + np.exp(-lp))
    calibrated = (rng.random(lp.size) < p).astype(float)
    assert brier_score(calibrated, p) == pytest.approx(skm.brier_score_loss(calibrated, p))
    fit = calibration_fit(calibrated, p)
    assert fit["intercept"] == pytest.approx(0, abs=0.05) and fit["slope"] == pytest.approx(1, abs=0.05)
    # outcomes from logit = 0.5 * lp (the model is overconfident): slope 0.5; too low on average: intercept > 0
    over = (rng.random(lp.size) < 1 / (1 + np.exp(-0.5 * lp))).astype(float)
    assert calibration_fit(over, p)["slope"] == pytest.approx(0.5, abs=0.05)
    shifted = (rng.random(lp.size) < 1 / (1 + np.exp(-(lp + 1.0)))).astype(float)
    assert calibration_fit(shifted, p)["intercept"] == pytest.approx(1.0, abs=0.06)
    assert "no positive" in calibration_fit(np.zeros(10), p[:10])["not_estimable"]
    assert "separate" in calibration_fit([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])["not_estimable"]


def test_data_shift_flags_a_brighter_site_and_a_different_prevalence():
    rng = np.random.default_rng(0)
    train = [image_stats(rng.normal(100, 20, (32, 32))) for _ in range(40)]
    same = [image_stats(rng.normal(100, 20, (32, 32))) for _ in range(40)]
    bright = [image_stats(rng.normal(100, 20, (48, 48)) * 1.5) for _ in range(40)]
    assert not intensity_shift([r["mean"] for r in train], [r["mean"] for r in same])["flagged"]
    shift = intensity_shift([r["mean"] for r in train], [r["mean"] for r in bright])
    assert shift["flagged"] and shift["smd"] > 5 and shift["ks_p_value"] < 1e-6
    s = summarize_images(bright)
    assert s["shapes"] == [{"shape": [48, 48], "images": 40}] and s["mean"]["median"] == pytest.approx(150, abs=3)
    ya = np.r_[np.ones(20), np.zeros(180)][:, None]
    yb = np.r_[np.ones(60), np.zeros(140)][:, None]
    prev = prevalence_shift(["x"], ya, yb)["x"]
    assert prev["training"]["prevalence"] == 0.1 and prev["external"]["prevalence"] == 0.3
    assert prev["flagged"] and prev["p_value"] < 1e-5
    assert not prevalence_shift(["x"], ya, ya)["x"]["flagged"]
    assert math.isnan(intensity_shift([1.0], [2.0, 3.0])["smd"])

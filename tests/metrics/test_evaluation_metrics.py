"""Every evaluation metric cross-checked against scikit-learn (or a hand computation) on real labels.

Scores are deterministic (seeded) on the real PneumoniaMNIST test labels and the real NIH ChestX-ray14 labels
(14 findings, several rare), plus the outputs of a model trained here on real PneumoniaMNIST images.
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve
from sklearn.preprocessing import label_binarize

from medclass.metrics import (
    age_bands,
    average_precision,
    balanced_accuracy,
    binary_auc,
    binary_stats,
    bootstrap_ci,
    choose_threshold,
    choose_thresholds,
    cluster_index,
    confusion_matrix,
    evaluate_predictions,
    expected_calibration_error,
    fit_temperature,
    macro_auc,
    micro_auc,
    operating_point_specs,
    parse_method,
    per_class_accuracy,
    precision_recall_curve,
    probabilities,
    reliability,
    roc_curve,
    subgroup_metrics,
    to_json,
)
from tests.conftest import need


@pytest.fixture(scope="module")
def pneumonia(real_data):
    return np.load(need(real_data, "medmnist/pneumoniamnist.npz"))


@pytest.fixture(scope="module")
def pneumonia_scores(pneumonia):
    """Real test labels (624, 390 pneumonia) with seeded scores that carry ties (rounded to 2 decimals)."""
    y = pneumonia["test_labels"][:, 0].astype(float)
    rng = np.random.default_rng(7)
    s = np.clip(np.round(0.35 * y + 0.25 + 0.25 * rng.normal(size=len(y)), 2), 0, 1)
    return y, s


@pytest.fixture(scope="module")
def nih(real_data):
    """Real NIH ChestX-ray14 labels (1000 images, 14 findings), patient ids, sex and age; seeded scores."""
    path = need(real_data, "cxr14/labels_nih1000.csv")
    rows = list(csv.DictReader(open(path)))
    names = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
             "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"]
    y = np.array([[float(r[n]) for n in names] for r in rows])
    rng = np.random.default_rng(3)
    p = 1 / (1 + np.exp(-(1.5 * y - 1.0 + rng.normal(size=y.shape))))
    return {"names": names, "y": y, "p": p, "patients": [r["patient_id"] for r in rows],
            "sex": [r["sex"] for r in rows], "age": [r["age"] for r in rows]}


# ------------------------------------------------------------------ discrimination


def test_roc_pr_auc_ap_match_sklearn_on_pneumonia(pneumonia_scores):
    y, s = pneumonia_scores
    assert binary_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    fpr, tpr, thr = roc_curve(y, s)
    sk_fpr, sk_tpr, sk_thr = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thr[1:], sk_thr[1:])
    prec, rec, pthr = precision_recall_curve(y, s)
    sk_prec, sk_rec, sk_pthr = skm.precision_recall_curve(y, s)
    # sklearn lists increasing thresholds and appends (1, 0); ours decrease
    np.testing.assert_allclose(prec[::-1], sk_prec[:-1])
    np.testing.assert_allclose(rec[::-1], sk_rec[:-1])
    np.testing.assert_allclose(pthr[::-1], sk_pthr)


def test_per_label_metrics_on_nih_exclude_nan_and_mark_rare_labels_undefined(nih):
    y, p, names = nih["y"].copy(), nih["p"], nih["names"]
    y[::7, 0] = np.nan  # unknown labels: excluded for this label only
    sub = slice(0, 120)  # a small split: some findings have no positive there
    ys, ps = y[sub], p[sub]
    res = evaluate_predictions(ys, ps, names, thresholds=0.5, n_bootstrap=0, min_positives=4)
    undefined = [n for k, n in enumerate(names) if (ys[:, k] == 1).sum() == 0]
    assert undefined, "the subset should hold a finding without positives"
    out = to_json(res)
    for k, n in enumerate(names):
        known = ~np.isnan(ys[:, k])
        yk, pk = ys[known, k], ps[known, k]
        m = out["per_label"][n]
        assert m["positives"] == int(yk.sum()) and m["unknown"] == int((~known).sum())
        if n in undefined:
            assert m["auc"] is None and m["average_precision"] is None and m["sensitivity"] is None
            assert m["undefined"]["auc"] == "no positive cases"
            assert m["specificity"] == pytest.approx(skm.recall_score(yk, pk >= 0.5, pos_label=0))
            continue
        assert m["auc"] == pytest.approx(skm.roc_auc_score(yk, pk))
        assert m["average_precision"] == pytest.approx(skm.average_precision_score(yk, pk))
        d = (pk >= 0.5).astype(int)
        tn, fp, fn, tp = skm.confusion_matrix(yk, d, labels=[0, 1]).ravel()
        assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (tp, fp, tn, fn)
        assert m["sensitivity"] == pytest.approx(skm.recall_score(yk, d))
        assert m["specificity"] == pytest.approx(skm.recall_score(yk, d, pos_label=0))
        if tp + fp:
            assert m["ppv"] == pytest.approx(skm.precision_score(yk, d))
        else:
            assert m["ppv"] is None and m["undefined"]["ppv"] == "no positive decisions"
        if tn + fn:
            assert m["npv"] == pytest.approx(skm.precision_score(yk, d, pos_label=0))
        assert m["f1"] == pytest.approx(skm.f1_score(yk, d))
        assert m["accuracy"] == pytest.approx(skm.accuracy_score(yk, d))
    defined = [out["per_label"][n]["auc"] for n in names if n not in undefined]
    assert out["mean_auc_all_defined"] == pytest.approx(np.mean(defined))
    # the headline mean averages only the labels with >= min_positives (4) positives and negatives
    enough = [n for k, n in enumerate(names) if min(np.nansum(ys[:, k] == 1), np.nansum(ys[:, k] == 0)) >= 4]
    assert 0 < len(enough) < len(names) - len(undefined)
    assert out["mean_auc_labels"] == enough
    assert out["mean_auc"] == pytest.approx(np.mean([out["per_label"][n]["auc"] for n in enough]))
    assert out["macro"]["auc"] == pytest.approx(out["mean_auc"])
    assert sorted(out["mean_auc_excluded"]) == sorted(set(names) - set(enough))


def test_binary_stats_hand_computed():
    y = np.array([1, 1, 1, 0, 0, 0, 0, np.nan])
    d = np.array([1, 1, 0, 1, 0, 0, 0, 1])
    s = binary_stats(y, d)
    assert (s["tp"], s["fn"], s["fp"], s["tn"]) == (2, 1, 1, 3)
    assert s["sensitivity"] == pytest.approx(2 / 3) and s["specificity"] == pytest.approx(3 / 4)
    assert s["ppv"] == pytest.approx(2 / 3) and s["npv"] == pytest.approx(3 / 4)
    assert s["f1"] == pytest.approx(4 / 6) and s["accuracy"] == pytest.approx(5 / 7)
    none = binary_stats([0, 0, 0], [0, 0, 0])
    assert math.isnan(none["sensitivity"]) and math.isnan(none["ppv"]) and math.isnan(none["f1"])
    assert set(none["undefined"]) == {"sensitivity", "ppv", "f1"}


# ------------------------------------------------------------------ operating points


def test_youden_and_target_thresholds_against_sklearn_roc(pneumonia_scores):
    y, s = pneumonia_scores
    fpr, tpr, thr = skm.roc_curve(y, s, drop_intermediate=False)
    fpr, tpr, thr = fpr[1:], tpr[1:], thr[1:]
    j = tpr - fpr
    you = choose_threshold(y, s, "youden")
    assert you["threshold"] == pytest.approx(thr[np.argmax(j)])
    d = s >= you["threshold"]
    assert you["sensitivity"] - (1 - you["specificity"]) == pytest.approx(j.max())
    assert you["sensitivity"] == pytest.approx(skm.recall_score(y, d))

    sens = choose_threshold(y, s, "sensitivity", 0.9)
    assert sens["sensitivity"] >= 0.9
    assert sens["threshold"] == pytest.approx(thr[tpr >= 0.9].max())  # the highest threshold reaching it
    spec = choose_threshold(y, s, "specificity", 0.9)
    assert spec["specificity"] >= 0.9
    assert spec["threshold"] == pytest.approx(thr[1 - fpr >= 0.9].min())  # the lowest threshold reaching it
    assert skm.recall_score(y, s >= spec["threshold"], pos_label=0) == pytest.approx(spec["specificity"])

    fixed = choose_threshold(y, s, "fixed", 0.42)
    assert fixed["threshold"] == 0.42
    assert fixed["sensitivity"] == pytest.approx(skm.recall_score(y, s >= 0.42))


def test_threshold_undefined_without_positives_uses_default_with_reason():
    out = choose_threshold([0, 0, 0, np.nan], [0.1, 0.7, 0.3, 0.9], "youden")
    assert out["threshold"] == 0.5 and "no positive cases" in out["undefined"]


def test_operating_point_specs():
    names = ["a", "b", "c"]
    assert operating_point_specs("youden", names) == [("youden", None)] * 3
    assert operating_point_specs({"b": "sensitivity:0.9", "c": 0.3}, names) == [
        ("youden", None), ("sensitivity", 0.9), ("fixed", 0.3)]
    assert operating_point_specs([0.2, "specificity:0.95", "youden"], names)[1] == ("specificity", 0.95)
    assert parse_method("0.25") == ("fixed", 0.25)
    for bad in ("sensitivity", "sensitivity:1.5", "median", 2.0, True):
        with pytest.raises((ValueError, TypeError)):
            parse_method(bad)
    with pytest.raises(ValueError, match="unknown labels"):
        operating_point_specs({"z": 0.5}, names)
    with pytest.raises(ValueError, match="3 labels"):
        operating_point_specs([0.5, 0.5], names)


# ------------------------------------------------------------------ calibration


def test_reliability_and_ece_match_sklearn_calibration_curve(nih):
    y, p = nih["y"][:, 2], nih["p"][:, 2]  # Effusion
    for n_bins in (5, 10, 15):
        r = reliability(y, p, n_bins)
        true, pred = calibration_curve(y, p, n_bins=n_bins, strategy="uniform")
        np.testing.assert_allclose(r["frequency"], true)
        np.testing.assert_allclose(r["confidence"], pred)
        # ECE by hand: bin membership as sklearn assigns it
        ids = np.searchsorted(np.linspace(0, 1, n_bins + 1)[1:-1], p)
        ece = sum(abs(y[ids == b].mean() - p[ids == b].mean()) * (ids == b).sum() / len(y)
                  for b in range(n_bins) if (ids == b).any())
        assert r["ece"] == pytest.approx(ece) and expected_calibration_error(y, p, n_bins) == pytest.approx(ece)
        assert sum(r["count"]) == len(y)


def test_temperature_scaling_recovers_a_known_temperature_and_lowers_log_loss():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(scale=2.0, size=(4000, 2))
    y = (rng.random(true_logits.shape) < 1 / (1 + np.exp(-true_logits))).astype(float)
    over = true_logits * 3.0  # an over-confident model
    t = fit_temperature(over, y, "multilabel")
    assert t == pytest.approx(3.0, rel=0.1)
    before = skm.log_loss(y.ravel(), probabilities(over, "multilabel").ravel())
    after = skm.log_loss(y.ravel(), probabilities(over, "multilabel", t).ravel())
    assert after < before
    # multi-class (softmax)
    k_logits = rng.normal(scale=2.0, size=(3000, 3))
    pk = probabilities(k_logits, "multiclass")
    cls = np.array([rng.choice(3, p=row) for row in pk])
    onehot = np.eye(3)[cls]
    assert fit_temperature(k_logits * 0.5, onehot, "multiclass") == pytest.approx(0.5, rel=0.1)


# ------------------------------------------------------------------ multi-class


def test_multiclass_metrics_match_sklearn():
    rng = np.random.default_rng(5)
    cls = rng.integers(0, 4, 400)
    logits = rng.normal(size=(400, 4)) + 1.5 * np.eye(4)[cls]
    p = probabilities(logits, "multiclass")
    y = np.eye(4)[cls]
    y[:10] = np.nan  # unknown rows excluded
    k, pk = cls[10:], p[10:]
    pred = pk.argmax(axis=1)
    np.testing.assert_array_equal(confusion_matrix(y, p), skm.confusion_matrix(k, pred, labels=range(4)))
    np.testing.assert_allclose(per_class_accuracy(y, p), skm.recall_score(k, pred, average=None))
    assert balanced_accuracy(y, p) == pytest.approx(skm.balanced_accuracy_score(k, pred))
    assert macro_auc(y, p) == pytest.approx(skm.roc_auc_score(k, pk, multi_class="ovr", average="macro"))
    assert micro_auc(y, p) == pytest.approx(skm.roc_auc_score(label_binarize(k, classes=range(4)), pk,
                                                              average="micro"))
    res = to_json(evaluate_predictions(y, p, list("abcd"), task="multiclass", n_bootstrap=0))
    assert res["accuracy"] == pytest.approx(skm.accuracy_score(k, pred))
    assert res["multiclass"]["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(k, pred))
    conf = pk.max(axis=1)
    true, mean = calibration_curve((pred == k).astype(float), conf, n_bins=10)
    np.testing.assert_allclose(res["calibration"]["top_label"]["frequency"], true)
    np.testing.assert_allclose(res["calibration"]["top_label"]["confidence"], mean)
    # per-class statistics are one-vs-rest at the arg-max decisions
    tn, fp, fn, tp = skm.confusion_matrix(k == 1, pred == 1).ravel()
    assert res["per_label"]["b"]["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert res["per_label"]["b"]["specificity"] == pytest.approx(tn / (tn + fp))


# ------------------------------------------------------------------ bootstrap and subgroups


def test_bootstrap_resamples_whole_patients_reproducibly(nih):
    patients = nih["patients"]
    n = len(patients)
    units = cluster_index(patients, n)
    assert len(units) == len(set(patients)) < n  # NIH1000 has patients with several images
    by_patient = {}
    for i, pid in enumerate(patients):
        by_patient.setdefault(pid, set()).add(i)
    seen = []

    def stat(idx):
        seen.append(idx)
        return float(len(idx))

    bootstrap_ci(stat, n, patients, n_resamples=20, seed=1)
    for idx in seen:  # every drawn patient comes with all of its images
        rows = set(idx.tolist())
        for pid in {patients[i] for i in rows}:
            assert by_patient[pid] <= rows
    y, p = nih["y"][:, 2], nih["p"][:, 2]
    a = bootstrap_ci(lambda i: binary_auc(y[i], p[i]), n, patients, n_resamples=200, seed=0)
    b = bootstrap_ci(lambda i: binary_auc(y[i], p[i]), n, patients, n_resamples=200, seed=0)
    c = bootstrap_ci(lambda i: binary_auc(y[i], p[i]), n, patients, n_resamples=200, seed=1)
    assert (a["lower"], a["upper"]) == (b["lower"], b["upper"]) and a["unit"] == "patient"
    assert (a["lower"], a["upper"]) != (c["lower"], c["upper"])
    auc = skm.roc_auc_score(y, p)
    assert a["lower"] < auc < a["upper"] and a["upper"] - a["lower"] < 0.2
    # a hand loop over the same draws gives the same percentile interval
    rng = np.random.default_rng(0)
    vals = []
    for _ in range(200):
        chosen = rng.integers(0, len(units), len(units))
        idx = np.concatenate([units[u] for u in chosen])
        vals.append(skm.roc_auc_score(y[idx], p[idx]))
    assert a["lower"] == pytest.approx(np.quantile(vals, 0.025)) and a["upper"] == pytest.approx(np.quantile(vals, 0.975))
    # without patient ids, images are the unit
    assert bootstrap_ci(lambda i: float(np.mean(y[i])), n, None, 10)["unit"] == "image"


def test_subgroups_match_sklearn_on_each_subset(nih):
    y, p, names = nih["y"], nih["p"], nih["names"]
    bands = age_bands(nih["age"], [0, 40, 60, 80])
    assert set(bands) <= {"0-40", "40-60", "60-80", ">=80", "(missing)"}
    d = (p >= 0.5).astype(int)
    rows = subgroup_metrics(y, p, d, names, {"sex": nih["sex"], "age": bands})
    sexes = sorted(set(nih["sex"]))
    assert [r["value"] for r in rows if r["column"] == "sex"] == sexes
    assert sum(r["n"] for r in rows if r["column"] == "sex") == len(y)
    for r in rows:
        values = nih["sex"] if r["column"] == "sex" else bands
        m = np.array([v == r["value"] for v in values])
        assert r["n"] == m.sum()
        k = names.index("Effusion")
        q = r["per_label"]["Effusion"]
        assert q["positives"] == int(y[m, k].sum())
        if 0 < y[m, k].sum() < m.sum():
            assert q["auc"] == pytest.approx(skm.roc_auc_score(y[m, k], p[m, k]))
            assert q["sensitivity"] == pytest.approx(skm.recall_score(y[m, k], d[m, k]))
        else:
            assert math.isnan(q["auc"])
    assert age_bands(["35", "", "x", "85", "-1"], [0, 40, 80]) == ["0-40", "(missing)", "(missing)", ">=80", "<0"]


# ------------------------------------------------------------------ a model trained on real images


def test_metrics_of_a_model_trained_on_real_pneumonia_images(pneumonia):
    """A logistic-regression model trained here on real PneumoniaMNIST pixels: thresholds chosen on its
    validation outputs, every test figure checked against scikit-learn."""
    import torch

    def feats(x):
        x = torch.as_tensor(x, dtype=torch.float32)[:, None] / 255.0
        return torch.nn.functional.avg_pool2d(x, 4).flatten(1)  # 7x7 = 49 features

    xtr, ytr = feats(pneumonia["train_images"][:1500]), torch.as_tensor(pneumonia["train_labels"][:1500, 0]).float()
    torch.manual_seed(0)
    model = torch.nn.Linear(49, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    for _ in range(150):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model((xtr - mu) / sd)[:, 0], ytr)
        loss.backward()
        opt.step()
    with torch.no_grad():
        lv = model((feats(pneumonia["val_images"]) - mu) / sd).numpy()
        lt = model((feats(pneumonia["test_images"]) - mu) / sd).numpy()
    yv = pneumonia["val_labels"][:, :1].astype(float)
    yt = pneumonia["test_labels"][:, :1].astype(float)
    t = fit_temperature(lv, yv)
    pv, pt = probabilities(lv, temperature=t), probabilities(lt, temperature=t)
    assert skm.log_loss(yv, pv) <= skm.log_loss(yv, probabilities(lv)) + 1e-9
    chosen = choose_thresholds(yv, pv, ["pneumonia"], "youden")[0]
    res = to_json(evaluate_predictions(yt, pt, ["pneumonia"], thresholds=chosen["threshold"], n_bootstrap=200))
    m = res["per_label"]["pneumonia"]
    auc = skm.roc_auc_score(yt[:, 0], pt[:, 0])
    assert auc > 0.75  # it learned something from the real images
    assert m["auc"] == pytest.approx(auc) and res["mean_auc"] == pytest.approx(auc)
    assert m["auc_ci"][0] < auc < m["auc_ci"][1]
    assert m["average_precision"] == pytest.approx(skm.average_precision_score(yt[:, 0], pt[:, 0]))
    d = pt[:, 0] >= chosen["threshold"]
    assert m["sensitivity"] == pytest.approx(skm.recall_score(yt[:, 0], d))
    assert m["specificity"] == pytest.approx(skm.recall_score(yt[:, 0], d, pos_label=0))
    assert m["ppv"] == pytest.approx(skm.precision_score(yt[:, 0], d))
    assert m["f1"] == pytest.approx(skm.f1_score(yt[:, 0], d))
    true, mean = calibration_curve(yt[:, 0], pt[:, 0], n_bins=10)
    np.testing.assert_allclose(res["calibration"]["per_label"]["pneumonia"]["frequency"], true)
    assert res["calibration"]["ece"] == pytest.approx(m["ece"])

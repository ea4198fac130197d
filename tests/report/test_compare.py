"""``medclass compare``: a known difference between two models is found, identical evaluations show none, images
are matched by id, and evaluations of different images or labels are refused naming what differs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn import metrics as skm

from medclass.report.compare import compare_evaluations

NAMES = ["effusion", "nodule"]


def write_eval(folder: Path, ids, y, p, thresholds, order=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    order = np.arange(len(ids)) if order is None else order
    with open(folder / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id"] + [f"prob_{n}" for n in NAMES] + [f"pred_{n}" for n in NAMES]
                   + [f"label_{n}" for n in NAMES])
        for i in order:
            w.writerow([ids[i]] + [f"{v:.6f}" for v in p[i]] + [int(v >= t) for v, t in zip(p[i], thresholds)]
                       + ["" if np.isnan(v) else int(v) for v in y[i]])
    (folder / "thresholds.json").write_text(json.dumps(
        {"labels": [{"label": n, "threshold": t} for n, t in zip(NAMES, thresholds)]}))
    return folder


@pytest.fixture()
def two_models(tmp_path):
    rng = np.random.default_rng(0)
    n = 300
    y = np.c_[(rng.random(n) < 0.3), np.r_[np.ones(4), np.zeros(n - 4)]].astype(float)
    y[::17, 0] = np.nan  # unknown labels are left out
    strong = 1 / (1 + np.exp(-(3.0 * np.nan_to_num(y) - 1.5 + rng.normal(size=y.shape))))
    weak = 1 / (1 + np.exp(-(0.4 * np.nan_to_num(y) - 0.2 + rng.normal(size=y.shape))))
    ids = [f"img{i:04d}" for i in range(n)]
    a = write_eval(tmp_path / "eval_a", ids, y, strong, [0.5, 0.5])
    b = write_eval(tmp_path / "eval_b", ids, y, weak, [0.45, 0.55], order=rng.permutation(n))  # other row order
    return a, b, ids, y, strong, weak


def test_compare_finds_the_known_difference(two_models, tmp_path):
    a, b, ids, y, strong, weak = two_models
    res = compare_evaluations(a, b, tmp_path / "out")
    eff = res["per_label"][0]
    known = ~np.isnan(y[:, 0])
    assert eff["auc_a"] == pytest.approx(skm.roc_auc_score(y[known, 0], strong[known, 0]), abs=1e-5)
    assert eff["auc_b"] == pytest.approx(skm.roc_auc_score(y[known, 0], weak[known, 0]), abs=1e-5)
    assert eff["auc_difference"] > 0.2 and eff["difference_ci_lower"] > 0 and eff["delong_p"] < 1e-6
    ya = y[known, 0] == 1
    right_a = (strong[known, 0] >= 0.5) == ya
    right_b = (weak[known, 0] >= 0.45) == ya  # each model at its own stored threshold
    assert (eff["only_a_correct"], eff["only_b_correct"]) == (int((right_a & ~right_b).sum()),
                                                              int((~right_a & right_b).sum()))
    assert eff["mcnemar_p"] < 1e-3 and eff["mcnemar_method"].startswith("chi-square")
    nod = res["per_label"][1]  # 4 positives: compared, but flagged
    assert not nod["estimable"] and "4 positive" in nod["note"]
    rows = list(csv.DictReader(open(tmp_path / "out" / "compare.csv")))
    assert [r["label"] for r in rows] == NAMES and float(rows[0]["auc_difference"]) == pytest.approx(
        eff["auc_difference"], abs=1e-5)
    assert Image.open(tmp_path / "out" / "compare.png").size[0] > 300


def test_identical_evaluations_show_no_difference(two_models, tmp_path):
    a, *_ = two_models
    res = compare_evaluations(a, a)
    for r in res["per_label"]:
        assert r["auc_difference"] == 0.0 and r["delong_p"] == 1.0 and "rank every case alike" in r["note"]
        assert r["only_a_correct"] == r["only_b_correct"] == 0 and r["mcnemar_p"] == 1.0


def test_different_images_or_labels_are_refused_naming_what_differs(two_models, tmp_path):
    a, b, ids, y, strong, weak = two_models
    fewer = write_eval(tmp_path / "fewer", ids[:-2], y[:-2], weak[:-2], [0.5, 0.5])
    with pytest.raises(ValueError, match=r"not evaluations of the same test images: 2 image\(s\) only in .*eval_a "
                                         r"\('img0298', 'img0299'\)"):
        compare_evaluations(a, fewer)
    flipped = y.copy()
    flipped[5, 1] = 1 - flipped[5, 1]
    other = write_eval(tmp_path / "relabelled", ids, flipped, weak, [0.5, 0.5])
    with pytest.raises(ValueError, match=r"1 different label value\(s\) for the same images \(e.g. img0005/nodule\)"):
        compare_evaluations(a, other)
    (tmp_path / "renamed").mkdir()
    text = (b / "predictions.csv").read_text().replace("nodule", "mass")
    (tmp_path / "renamed" / "predictions.csv").write_text(text)
    with pytest.raises(ValueError, match=r"labels only in .*: \['nodule'\]; only in .*: \['mass'\]"):
        compare_evaluations(a, tmp_path / "renamed")


def test_medclass_compare_prints_the_table_and_writes_the_files(two_models, tmp_path):
    a, b, *_ = two_models
    res = subprocess.run([sys.executable, "-m", "medclass.cli", "compare", str(a), str(b), "--out",
                          str(tmp_path / "cmp")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "effusion" in res.stdout and "DeLong p" in res.stdout and "McNemar p" in res.stdout
    assert (tmp_path / "cmp" / "compare.csv").exists() and (tmp_path / "cmp" / "compare.json").exists()
    bad = subprocess.run([sys.executable, "-m", "medclass.cli", "compare", str(a), str(tmp_path / "missing")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "no predictions file" in bad.stderr

"""The evaluation report: files, self-contained HTML with the saliency gallery, and ``medclass report``."""

from __future__ import annotations

import base64
import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medclass.report import annotate_predictions, build_report, read_predictions
from tests.conftest import need

NAMES = ["Atelectasis", "Cardiomegaly", "Effusion", "Hernia"]


def _png(path: Path, color) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (48, 32), color).save(path)
    return path.read_bytes()


def make_folder(folder: Path, real_data: Path, n: int = 200) -> Path:
    """An evaluation folder from real NIH labels (first ``n`` test-like rows), seeded scores, patient ids,
    sex and age bands, and validation thresholds; Hernia has no positive among them (undefined)."""
    rows = list(csv.DictReader(open(need(real_data, "cxr14/labels_nih1000.csv"))))[:n]
    y = np.array([[float(r[k]) for k in NAMES] for r in rows])
    y[::9, 0] = np.nan
    rng = np.random.default_rng(11)
    p = 1 / (1 + np.exp(-(1.4 * np.nan_to_num(y) - 1.2 + rng.normal(size=y.shape))))
    folder.mkdir(parents=True, exist_ok=True)
    thresholds = [0.35, 0.4, 0.45, 0.5]
    with open(folder / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id"] + [f"prob_{k}" for k in NAMES] + [f"pred_{k}" for k in NAMES] + [f"label_{k}" for k in NAMES])
        for i in range(n):
            w.writerow([f"img{i:04d}"] + [f"{v:.6f}" for v in p[i]] + [int(v >= t) for v, t in zip(p[i], thresholds)]
                       + ["" if np.isnan(v) else int(v) for v in y[i]])
    items = [{"id": f"img{i:04d}", "patient_id": r["patient_id"], "sex": r["sex"], "age": r["age"]}
             for i, r in enumerate(rows)]
    annotate_predictions(folder / "predictions.csv", items, ["sex", {"column": "age", "bins": [0, 40, 60]}])
    (folder / "thresholds.json").write_text(json.dumps({
        "split": "validation", "task": "multilabel", "operating_point": "youden", "temperature": 1.3,
        "labels": [{"label": k, "method": "youden", "target": None, "threshold": t, "sensitivity": 0.8,
                    "specificity": 0.7} for k, t in zip(NAMES, thresholds)]}))
    return folder


def test_report_is_self_contained_and_embeds_the_saliency_gallery(real_data, tmp_path):
    folder = make_folder(tmp_path / "eval", real_data)
    shown = [_png(folder / "saliency" / "Effusion" / f"img{i}.png", (200, 40 * i, 30)) for i in range(3)]
    (folder / "saliency" / "Effusion" / "overlay.nii.gz").write_bytes(b"not an image")  # not a PNG: ignored
    metrics = build_report(folder, n_bootstrap=100, saliency_max=2)
    page = (folder / "report.html").read_text()
    # one image per label (ROC + PR), the reliability diagram, the confusion matrices, two saliency images
    imgs = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(imgs) == len(NAMES) + 2 + 2
    assert base64.b64encode(shown[0]).decode() in imgs and base64.b64encode(shown[1]).decode() in imgs
    assert base64.b64encode(shown[2]).decode() not in page and "2 of 3 saliency images shown" in page
    assert "<script" not in page and "http://" not in page and "https://" not in page  # nothing external
    for name in NAMES:
        png = folder / "plots" / f"roc_pr_{name}.png"
        assert Image.open(png).size[0] > 300
    assert (folder / "plots" / "reliability.png").exists() and (folder / "plots" / "confusion.png").exists()
    # thresholds come from thresholds.json (chosen on validation), the temperature is reported
    assert metrics["thresholds"] == {"Atelectasis": 0.35, "Cardiomegaly": 0.4, "Effusion": 0.45, "Hernia": 0.5}
    assert metrics["temperature"] == 1.3 and "youden" in page
    # Hernia has no positive: undefined, written as JSON null, shown as such, no crash
    raw = (folder / "metrics.json").read_text()
    assert "NaN" not in raw
    hernia = json.loads(raw)["per_label"]["Hernia"]
    assert hernia["auc"] is None and hernia["undefined"]["auc"] == "no positive cases"
    assert "AUC undefined: no positive cases" not in page  # the reason is in the table, the plot says it in PNG
    assert "undefined" in page
    # patients: the bootstrap resamples them; subgroups by sex and age band with counts
    assert metrics["bootstrap"]["unit"] == "patient" and metrics["bootstrap"]["units"] < 200
    values = {(s["column"], s["value"]) for s in metrics["subgroups"]}
    assert {("sex", "F"), ("sex", "M"), ("age", "0-40"), ("age", "40-60"), (("age", ">=60"))} <= values
    per_label = list(csv.DictReader(open(folder / "per_label.csv")))
    assert [r["label"] for r in per_label] == NAMES and per_label[3]["auc"] == ""
    assert "auc: no positive cases" in per_label[3]["undefined"]
    # "not estimable" with the reason, in every output; counts first in the table; no zero-width interval
    assert hernia["not_estimable"]["auc"] == "no positive test cases" and hernia["auc_ci"] == [None, None]
    assert "not estimable: no positive test cases" in page
    assert list(per_label[0])[:4] == ["label", "positives", "negatives", "unknown"]
    assert "auc: no positive test cases" in per_label[3]["not_estimable"] and per_label[3]["in_mean_auc"] == "False"
    for r in per_label:
        for key in ("auc", "sensitivity", "specificity", "ppv", "npv"):
            lo, hi = r[f"{key}_ci_lower"], r[f"{key}_ci_upper"]
            assert (lo == hi == "") or float(hi) > float(lo), (r["label"], key, lo, hi)
    # the headline names what it averages and what it leaves out
    assert metrics["mean_auc_labels"] == [n for n in NAMES if metrics["per_label"][n]["estimable"]]
    assert "Hernia" in metrics["mean_auc_excluded"] and "labels left out of the mean" in page


def test_predictions_carry_no_patient_identifier(real_data, tmp_path):
    folder = make_folder(tmp_path / "eval", real_data)
    pred = read_predictions(folder / "predictions.csv")
    assert all(re.fullmatch(r"P\d{4}", p) for p in pred["patients"])
    rows = list(csv.DictReader(open(need(real_data, "cxr14/labels_nih1000.csv"))))[:200]
    assert len(set(pred["patients"])) == len({r["patient_id"] for r in rows})
    assert set(pred["groups"]) == {"sex", "age"}


def test_medclass_report_rebuilds_the_same_figures(real_data, tmp_path):
    folder = make_folder(tmp_path / "eval", real_data)
    first = build_report(folder, n_bootstrap=100, seed=3)
    (folder / "report.html").unlink()
    (folder / "per_label.csv").unlink()
    res = subprocess.run([sys.executable, "-m", "medclass.cli", "report", str(folder)], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    again = json.loads((folder / "metrics.json").read_text())
    assert again["settings"]["n_bootstrap"] == 100 and again["settings"]["seed"] == 3  # earlier settings reused
    for key in ("mean_auc", "mean_auc_ci", "per_label", "subgroups", "calibration"):
        assert again[key] == first[key], key
    assert (folder / "report.html").exists() and (folder / "per_label.csv").exists()
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["mean_auc"] == pytest.approx(first["mean_auc"])


def test_medclass_report_without_labels_says_so(tmp_path):
    folder = tmp_path / "eval"
    folder.mkdir()
    (folder / "predictions.csv").write_text("id,prob_a,pred_a\nx,0.3,0\n")
    res = subprocess.run([sys.executable, "-m", "medclass.cli", "report", str(folder)], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2
    assert "predictions.csv: no label_<label> columns" in res.stderr


def test_unknown_subgroup_column_stops_before_inference():
    from medclass.handlers import EvaluationWriter

    items = [{"id": "a", "image": "a.png", "label": [1.0], "sex": "F"}]
    with pytest.raises(ValueError, match=r"subgroup column 'site' is not in the datalist; its columns are \['id', 'sex'\]"):
        EvaluationWriter("out", items=items, subgroups=["sex", "site"])
    with pytest.raises(ValueError, match="give a column name"):
        EvaluationWriter("out", items=items, subgroups=[3])


def test_report_runs_after_handlers_attached_later(real_data, tmp_path):
    """A saliency handler listed after the EvaluationWriter still writes its PNGs before the report is built."""
    from ignite.engine import Engine, Events

    from medclass.handlers import EvaluationWriter

    folder = make_folder(tmp_path / "eval", real_data)
    engine = Engine(lambda e, b: None)
    EvaluationWriter(folder, n_bootstrap=10).attach(engine)
    written = {}

    def saliency(_):
        written["png"] = _png(folder / "saliency" / "late.png", (10, 200, 10))

    engine.add_event_handler(Events.COMPLETED, saliency)
    engine.run([0], max_epochs=1)
    assert base64.b64encode(written["png"]).decode() in (folder / "report.html").read_text()

"""The model card (issue 24): built from the model file and its evaluation folder; its figures are metrics.json's; the
report gains the same model and data section; wide tables scroll."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medclass.networks import build_classifier
from medclass.report import build_report
from medclass.report.card import DATA_FILE, MODEL_FILE, data_summary, model_summary, num, read_model
from tests.report.test_report import NAMES, make_folder

ROOT = Path(__file__).resolve().parents[2]


def _model(path: Path) -> Path:
    torch.manual_seed(0)
    net = build_classifier("resnet18", spatial_dims=2, in_channels=1, num_classes=len(NAMES), image_size=(64, 64),
                           width=8, label_names=NAMES, thresholds=[0.35, 0.4, 0.45, 0.5])
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


def _md_table(md: str, first_header: str) -> list[list[str]]:
    """The rows of the Markdown table whose header starts with ``first_header``."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split(" | ")])
    return rows


def _first(cell: str) -> str:
    return cell.split(" [")[0].split(" (")[0]


@pytest.fixture
def evaluated(real_data, tmp_path):
    folder = make_folder(tmp_path / "eval", real_data)
    model = _model(tmp_path / "models" / "model.pt")
    splits = {"training": [{"id": f"t{i}", "patient_id": f"p{i // 2}", "label": [float(i % 3 == 0), 0.0, 1.0, 0.0]}
                           for i in range(30)],
              "validation": [{"id": f"v{i}", "patient_id": f"q{i}", "label": [float(i % 2), 1.0, 0.0, float("nan")]}
                             for i in range(10)]}
    (folder / MODEL_FILE).write_text(json.dumps(model_summary(read_model(model))))
    (folder / DATA_FILE).write_text(json.dumps(data_summary(splits, NAMES)))
    metrics = build_report(folder, n_bootstrap=50)
    return folder, model, metrics


def test_model_card_numbers_are_metrics_json_numbers(evaluated, tmp_path):
    folder, model, metrics = evaluated
    out = tmp_path / "card"
    res = subprocess.run([sys.executable, "-m", "medclass.cli", "model-card", str(model), str(folder), "--out",
                          str(out)], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    md = (out / "model_card.md").read_text()
    saved = json.loads((folder / "metrics.json").read_text())
    values = json.loads((out / "model_card.json").read_text())
    assert values["per_label"] == saved["per_label"]  # the card's figures are copied, not recomputed
    assert values["metrics"]["mean_auc"] == saved["mean_auc"]

    rows = {r[0]: r for r in _md_table(md, "label | test pos/neg")}
    assert sorted(rows) == sorted(NAMES)
    for name in NAMES:
        m = saved["per_label"][name]
        r = rows[name]
        assert r[1] == f"{m['positives']}/{m['negatives']}"
        for col, key in ((2, "auc"), (3, "sensitivity"), (4, "specificity"), (5, "ppv"), (6, "npv")):
            if m[key] is None:
                assert r[col].startswith("not estimable")
            else:
                assert _first(r[col]) == num(m[key]), (name, key, r[col])
                ci = m.get(f"{key}_ci")
                if ci and ci[0] is not None:
                    assert f"[{num(ci[0])}, {num(ci[1])}]" in r[col]
    thresholds = {r[0]: float(r[1]) for r in _md_table(md, "label | threshold")}
    assert thresholds == {n: pytest.approx(saved["per_label"][n]["threshold"], abs=1e-4) for n in NAMES}
    mean = dict((r[0], r[1]) for r in _md_table(md, "figure"))
    key = next(k for k in mean if k.startswith("mean AUC"))
    assert _first(mean[key]) == num(saved["mean_auc"])

    # every section names the TRIPOD+AI / CLAIM items it answers; the model and data facts are there
    for title in ("Intended use", "Model: architecture and starting weights", "Training data", "Preprocessing",
                  "Performance per label", "Thresholds and how they were chosen", "Calibration", "Subgroups",
                  "Known limitations"):
        assert f"## {title}\n\n*Answers TRIPOD+AI" in md, title
    assert "random initialisation" in md and "resnet18" in md
    training = {r[0]: r for r in _md_table(md, "split")}
    assert training["training"][1:3] == ["30", "15"] and training["validation"][1:3] == ["10", "10"]
    assert training["training"][4] == f"{num(10 / 30)} (10/30)"  # Atelectasis prevalence, positives/known
    assert "p1" not in re.findall(r"\bp\d+\b", md)  # patient ids never appear, only counts

    page = (out / "model_card.html").read_text()
    assert page.count("<table") == page.count('<div class="scroll"><table')


def test_report_gains_the_model_and_data_section_and_its_tables_scroll(evaluated):
    folder, _, metrics = evaluated
    page = (folder / "report.html").read_text()
    assert "<h2>Model and data</h2>" in page and "Training data" in page and "resnet18" in page
    assert page.count("<table") > 5
    assert page.count("<table") == page.count('<div class="scroll"><table')  # wide tables scroll, not cut off
    css = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    assert ".scroll{overflow-x:auto}" in css


def test_fields_of_newer_model_files_are_shown_when_present():
    """Model files that record the preset, task and a training-data fingerprint (issue 24's other part) show them;
    older ones say "not recorded"."""
    from medclass.report.card import build_card, render_markdown

    meta = {"arch": "densenet121", "spatial_dims": 2, "label_names": ["x"], "thresholds": [0.25],
            "preset": "cxr", "preset_options": {"percentiles": [1, 99]}, "task": "binary",
            "training_data_fingerprint": "sha256:abc123"}
    md = render_markdown(build_card(model_summary(meta)))
    assert "| preset | cxr |" in md and '{"percentiles": [1, 99]}' in md and "(binary)" in md
    assert "sha256:abc123" in md and "| x | 0.2500 |" in md
    old = render_markdown(build_card(model_summary({"arch": "resnet18", "label_names": ["x"]})))
    assert "| preset | not recorded |" in old and "| training-data fingerprint | not recorded |" in old


def test_model_card_without_evaluation_and_for_a_non_medclass_file(tmp_path):
    model = _model(tmp_path / "models" / "model.pt")
    (tmp_path / "models" / "split.csv").write_text("id,image,patient_id,split\na,a.png,P1,training\nb,b.png,P1,"
                                                   "training\nc,c.png,P2,test\n")
    from medclass.report.card import write_model_card

    paths = write_model_card(model)
    md = paths[0].read_text()
    assert paths[0].parent == model.parent and "No evaluation given" in md
    stored = {r[0]: float(r[1]) for r in _md_table(md, "label | threshold")}
    assert stored == {n: pytest.approx(t) for n, t in zip(NAMES, [0.35, 0.4, 0.45, 0.5])}
    training = {r[0]: r for r in _md_table(md, "split")}
    assert training["training"][1:3] == ["2", "1"] and "P1" not in md
    torch.save({"w": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a medclass model file"):
        write_model_card(tmp_path / "other.pt")

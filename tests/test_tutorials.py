"""Tutorials run end to end with tiny settings."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"


def test_tutorial_01_chest_xray_bundle(real_data, tmp_path):
    res = subprocess.run([sys.executable, str(TUTORIALS / "01_chest_xray_bundle.py"), "--tiny", "--workdir",
                          str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert len(metrics["per_label"]) == 14 and metrics["n"] >= 40  # 15% of the 334 tiny-run images
    assert metrics["bootstrap"]["unit"] == "patient" and metrics["operating_points"]["split"] == "validation"
    sexes = {s["value"]: s["n"] for s in metrics["subgroups"] if s["column"] == "Patient Gender"}
    assert set(sexes) == {"F", "M"} and sum(sexes.values()) == metrics["n"]
    assert {s["column"] for s in metrics["subgroups"]} == {"Patient Gender", "View Position", "Patient Age"}
    assert (tmp_path / "eval" / "report.html").exists() and (tmp_path / "models" / "thresholds.json").exists()
    rows = list(csv.DictReader(open(tmp_path / "predictions" / "predictions.csv")))
    assert sorted(r["id"] for r in rows) == sorted(p.stem for p in (real_data / "dicom" / "chest_xray").glob("*.dcm"))
    for r in rows:
        assert 0.0 <= float(r["prob_Effusion"]) <= 1.0
    assert "python -m monai.bundle run" in res.stdout  # the commands are shown to the reader


@pytest.mark.heavy
def test_tutorial_02_your_own_3d_dataset(real_data, tmp_path):
    res = subprocess.run([sys.executable, str(TUTORIALS / "02_your_own_3d_dataset.py"), "--tiny", "--workdir",
                          str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert list(metrics["per_label"]) == ["sex_male"] and metrics["n"] >= 1
    rows = list(csv.DictReader(open(tmp_path / "predictions" / "predictions.csv")))
    assert [r["id"] for r in rows] == ["mr_t1_mprage_series"]  # the 176 slices are one study
    assert 0.0 <= float(rows[0]["prob_sex_male"]) <= 1.0
    assert "series read as (1, 256, 256, 176); network input (1, 64, 64, 48) in RAS orientation" in res.stdout


@pytest.mark.heavy
def test_tutorial_03_saliency(tmp_path):
    res = subprocess.run([sys.executable, str(TUTORIALS / "03_saliency.py"), "--tiny", "--workdir", str(tmp_path)],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    for dims, kinds in ((2, {".png", ".npy"}), (3, {".png", ".gz"})):
        rows = list(csv.DictReader(open(tmp_path / f"{dims}d" / "sal" / "saliency" / "index.csv")))
        split = csv.DictReader(open(tmp_path / f"{dims}d" / "models" / "split.csv"))
        test_ids = {r["id"] for r in split if r["split"] == "test"}
        assert test_ids and {r["id"] for r in rows} == test_ids  # negatives explained too: a map for every image
        files = {p.suffix for p in (tmp_path / f"{dims}d" / "sal" / "saliency").iterdir()}
        assert files >= kinds | {".csv"}
    assert "same affine: True" in res.stdout
    assert "pointing game 2D" in res.stdout and "pointing game 3D" in res.stdout
    assert "python -m monai.bundle run" in res.stdout


@pytest.mark.heavy
def test_tutorial_05_pretrained(real_data, tmp_path):
    """Offline, with stand-in files in TorchXRayVision's and torchvision's published layouts: the log says what was
    loaded and which head rows transferred; each model.pt records its source and preprocessing."""
    res = subprocess.run([sys.executable, str(TUTORIALS / "05_pretrained.py"), "--tiny", "--workdir", str(tmp_path)],
                         capture_output=True, text=True, timeout=1500)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    out = res.stdout
    # downloads: pinned URL, SHA-256, and offline the file to put where
    assert "https://huggingface.co/torchxrayvision/densenet121-res224-all/resolve/" in out
    assert "is not cached and downloads are off" in out and str(tmp_path / "empty_cache") in out
    # the training log: every backbone tensor loaded, the 14 ChestX-ray14 rows from TorchXRayVision's head
    assert "tensors loaded from" in out
    assert "(xrv_densenet), head rows transferred: {'Atelectasis': 'Atelectasis'" in out
    assert "(torchvision_resnet)" in out
    assert "re-initialised: [backbone.fc.weight, backbone.fc.bias] (new classification head)" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary) == {"xrv_linear_probe", "xrv_partial", "imagenet_partial"}
    for run in ("xrv_linear_probe", "xrv_partial"):
        rec = summary[run]["pretrained"]
        assert rec["layout"] == "xrv_densenet" and rec["source"].endswith("densenet121-d121-tw-lr001-rot45-tr15-sc15"
                                                                         "-seed0-best.pt")
        assert len(rec["label_rows"]) == 14 and rec["label_rows"]["Pleural_Thickening"] == "Pleural_Thickening"
        pre = rec["preprocessing"]
        assert pre["value_range"] == [-1024.0, 1024.0] and pre["channels"] == "as_is" and pre["folded"]
        assert pre["image_size"] == [224, 224] and len(rec["sha256"]) == 64
    rec = summary["imagenet_partial"]["pretrained"]
    assert rec["layout"] == "torchvision_resnet" and rec["source"] == "resnet18-f37072fd.pth"
    assert rec["label_rows"] == {}
    assert rec["preprocessing"]["channels"] == "sum" and rec["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
    for run in summary.values():
        auc = run["mean_auc"]
        assert auc is None or 0.0 <= auc <= 1.0
    rows = list(csv.DictReader(open(tmp_path / "predictions" / "predictions.csv")))
    assert rows and all(0.0 <= float(r["prob_Effusion"]) <= 1.0 for r in rows)
    assert "--pretrained" in out and "--freeze backbone" in out and "--backbone_lr_scale 0.1" in out

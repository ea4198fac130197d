"""An ensemble of two tiny members through every workflow of the 2D bundle (issue 21): trained with
``medclass run train --ensemble``, then evaluate (with TTA), inference, saliency, TorchScript and ONNX export and the
MONAI Label app's inference, each using the one ensemble model file as it uses a single model."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from medclass import bundle_tools as bt
from medclass.exports import export_model, model_from_file
from medclass.networks import Ensemble, read_model_record
from medclass.run_cli import main as run_main
from tests.bundles.test_bundles import LABELS, ROOT, TINY, workflow

BUNDLE = ROOT / "cxr_classification"


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ensemble")
    tiny = TINY[BUNDLE.name]
    args = ["train", "--bundle_root", str(BUNDLE), "--ensemble", "{members: 2, by: seed}", "--max_epochs", "1",
            "--dataset_dir", str(tmp / "data"), "--ckpt_dir", str(tmp / "models"), "--log_dir", str(tmp / "runs"),
            "--image_size", json.dumps(tiny["image_size"]), "--width", "8", "--batch_size", "8",
            "--phantoms", json.dumps(tiny["phantoms"]), "--progress_bar", "false"]
    assert run_main(args) == 0
    return tmp


def _rows(path):
    return list(csv.DictReader(open(path)))


def test_ensemble_runs_through_every_workflow(ensemble, tmp_path):
    tmp = ensemble
    labels = LABELS[BUNDLE.name]
    record = read_model_record(tmp / "models" / "model.pt")
    assert record["ensemble"] == {"members": 2, "by": "seed", "seeds": [0, 1],
                                  "sources": ["member_0", "member_1"]}
    for i in (0, 1):
        assert json.loads((tmp / "models" / "members" / f"member_{i}" / "member.json").read_text())["seed"] == i

    # evaluate with flip TTA: thresholds chosen on the averaged output, the TTA recorded in the model file
    wf = workflow(BUNDLE, "evaluate", tmp, tta="flip")
    assert isinstance(wf.parser.get_parsed_content("network"), Ensemble)
    wf.run()
    wf.finalize()
    rows = _rows(tmp / "eval" / "predictions.csv")
    assert [f"uncertainty_{n}" for n in labels] == [c for c in rows[0] if c.startswith("uncertainty_")]
    assert all(0.0 <= float(r[f"uncertainty_{n}"]) <= 0.5 for r in rows for n in labels)
    assert any(float(r[f"uncertainty_{labels[0]}"]) > 0 for r in rows)
    assert read_model_record(tmp / "models" / "model.pt")["operating_points"]["tta"] == "flip"
    metrics = json.loads((tmp / "eval" / "metrics.json").read_text())
    assert metrics["referral"]["fractions"][0] == 0.0 and len(metrics["referral"]["look_first"]) == min(10, len(rows))
    assert "Referral curve" in (tmp / "eval" / "report.html").read_text() or \
        "Uncertainty and referral" in (tmp / "eval" / "report.html").read_text()
    card = (tmp / "eval" / "model_card.md").read_text()
    assert "2 members by seed" in card and "CLAIM 22, 23, 24, 27" in card  # 27: ensembling techniques
    ranked = _rows(tmp / "eval" / "referral.csv")
    assert len(ranked) == len(rows) and float(ranked[0]["uncertainty"]) >= float(ranked[-1]["uncertainty"])

    # inference: tta auto takes the recorded flip, the probabilities are evaluate's
    out = tmp_path / "infer"
    wf = workflow(BUNDLE, "inference", tmp, output_dir=str(out))
    assert wf.parser.get_parsed_content("inferer").tta == "flip"
    wf.run()
    wf.finalize()
    inferred = {r["id"]: r for r in _rows(out / "predictions.csv")}
    for r in rows:
        assert float(inferred[r["id"]][f"prob_{labels[1]}"]) == pytest.approx(float(r[f"prob_{labels[1]}"]), abs=2e-2)
        assert f"uncertainty_{labels[1]}" in inferred[r["id"]]

    # saliency: the mean map of the members
    wf = workflow(BUNDLE, "saliency", tmp, output_dir=str(tmp_path / "sal"), saliency_max_images=2)
    wf.run()
    wf.finalize()
    assert list((tmp_path / "sal" / "saliency").rglob("*.png"))

    # exports: TorchScript through the bundle, ONNX through medclass export; both give the ensemble's logits
    model, _ = model_from_file(tmp / "models" / "model.pt")
    x = torch.randn(2, 1, *TINY[BUNDLE.name]["image_size"])
    copy = tmp_path / "bundle"
    (copy / "models").mkdir(parents=True)
    (copy / "configs").symlink_to(BUNDLE / "configs")
    ts = torch.jit.load(str(bt.export_torchscript(copy, ckpt_file=tmp / "models" / "model.pt",
                                                  filepath=copy / "models" / "model.ts")))
    with torch.no_grad():
        assert torch.allclose(ts(x), model(x), atol=1e-4)
    pytest.importorskip("onnxruntime")
    result = export_model(tmp / "models" / "model.pt", "onnx", tmp_path / "model.onnx")
    assert result.max_abs_diff < 1e-3


def test_label_app_serves_the_ensemble_with_its_uncertainty(ensemble, tmp_path):
    import shutil

    from medclass.label.bundle import BundleModel
    from tests.label.common import tiny_bundle

    served = tiny_bundle(BUNDLE.name, tmp_path / "bundle")
    (served / "models").mkdir()
    shutil.copy(ensemble / "models" / "model.pt", served / "models" / "model.pt")
    image = sorted((ensemble / "data" / "images").glob("*.png"))[0]
    result, saliency_file = BundleModel(served).predict(image, saliency=True, out_dir=tmp_path / "out")
    assert set(result["uncertainty"]) == set(LABELS[BUNDLE.name]) and saliency_file
    assert all(0 <= u <= 0.5 for u in result["uncertainty"].values())

"""The inference workflow's ``backend: onnxruntime`` (issue 24): an ONNX export of the model, run on ONNX Runtime,
writes the same predictions.csv as the PyTorch model; wrong uses stop with one sentence."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from medclass.exports import export_model
from tests.bundles.test_bundles import LABELS, ROOT, TINY, workflow
from tests.conftest import error_chain

pytest.importorskip("onnxruntime", reason="onnxruntime is in the [onnx] extra, which CI installs (scripts/test.sh)")

PRESET = {"cxr_classification": "cxr", "volume_classification": "ct"}


@pytest.fixture(scope="module", params=sorted(TINY))
def exported(request, tmp_path_factory):
    """A bundle with an untrained model.pt (its own thresholds and temperature) and its ONNX export."""
    bundle = ROOT / request.param
    tmp = tmp_path_factory.mktemp(request.param)
    net = workflow(bundle, "inference", tmp).parser.get_parsed_content("network_def")
    n = len(LABELS[bundle.name])
    net.set_thresholds(np.linspace(0.3, 0.7, n).tolist())
    net.set_temperature(1.25)
    (tmp / "models").mkdir(exist_ok=True)
    torch.save(net.state_dict(), tmp / "models" / "model.pt")
    export_model(tmp / "models" / "model.pt", "onnx", tmp / "models" / "model.onnx", preset=PRESET[bundle.name],
                 task="multilabel")
    return bundle, tmp


def _rows(path: Path) -> dict[str, dict[str, str]]:
    return {r["id"]: r for r in csv.DictReader(open(path))}


def test_onnxruntime_writes_the_same_predictions_as_torch(exported, tmp_path):
    bundle, tmp = exported
    outs = {}
    for backend in ("torch", "onnxruntime"):
        outs[backend] = tmp_path / backend
        wf = workflow(bundle, "inference", tmp, backend=backend, precision="fp32", output_dir=str(outs[backend]))
        wf.run()
        wf.finalize()
    ref, got = _rows(outs["torch"] / "predictions.csv"), _rows(outs["onnxruntime"] / "predictions.csv")
    assert len(ref) >= 5 and set(got) == set(ref)
    assert list(next(iter(got.values()))) == list(next(iter(ref.values())))  # same columns, same order
    labels = LABELS[bundle.name]
    probs = [[float(r[f"prob_{n}"]) for n in labels] for r in ref.values()]
    assert np.std(probs) > 1e-3  # not a degenerate model: the comparison can fail
    for image_id, r in ref.items():
        for n in labels:
            assert float(got[image_id][f"prob_{n}"]) == pytest.approx(float(r[f"prob_{n}"]), abs=1e-5)
            assert got[image_id][f"pred_{n}"] == r[f"pred_{n}"]  # the export's own thresholds decide


def test_onnxruntime_runs_inference_only_and_needs_the_export(exported, tmp_path):
    bundle, tmp = exported
    wf = workflow(bundle, "inference", tmp, backend="onnxruntime", model_path=str(tmp_path / "missing.onnx"),
                  output_dir=str(tmp_path / "o"))
    with pytest.raises(Exception) as err:
        wf.run()
    assert "missing.onnx: backend onnxruntime runs an ONNX export of the model; write it with `medclass export" in \
        error_chain(err.value)
    wf = workflow(bundle, "evaluate", tmp, backend="onnxruntime", output_dir=str(tmp_path / "e"))
    with pytest.raises(Exception) as err:
        wf.run()
    assert "onnxruntime runs the inference workflow only (this is evaluate" in error_chain(err.value)
    wf = workflow(bundle, "train", tmp, backend="onnxruntime", ckpt_dir=str(tmp_path / "m"), max_epochs=1)
    with pytest.raises(Exception) as err:
        wf.run()
    assert "onnxruntime runs the inference workflow only (this is train" in error_chain(err.value)
    with pytest.raises(Exception) as err:
        workflow(bundle, "inference", tmp, backend="tensorrt", output_dir=str(tmp_path / "t"))
    assert "setting backend: expected one of torch, onnxruntime, got 'tensorrt'" in error_chain(err.value)

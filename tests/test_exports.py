"""Exports (issue 24): ONNX and torch.export files compute the PyTorch model's logits on real 2D images and 3D
volumes, carry the labels, thresholds and preprocessing, and a bad request fails in one sentence."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from medclass.cli import main as cli_main
from medclass.exports import export_model, load_exported, max_abs_diff, model_from_file, read_exported_metadata
from medclass.networks import build_classifier
from medclass.networks.classifier import encode_metadata
from medclass.runtime import OnnxModel

onnx = pytest.importorskip("onnx", reason="onnx is in the [onnx] extra, which CI installs (scripts/test.sh)")
pytest.importorskip("onnxruntime", reason="onnxruntime is in the [onnx] extra, which CI installs (scripts/test.sh)")

DATA = Path(os.environ.get("MEDCLASS_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
NIH = DATA / "cxr14" / "NIH1000" / "test"
ADRENAL = DATA / "medmnist" / "adrenalmnist3d.npz"
LABELS = ["effusion", "nodule", "pneumothorax"]
THRESHOLDS = [0.125, 0.375, 0.625]


def _model_file(tmp_path: Path, spatial_dims: int, size: int, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = build_classifier("resnet18", spatial_dims, 1, len(LABELS), [size] * spatial_dims, width=4,
                             label_names=LABELS, thresholds=THRESHOLDS)
    model.set_temperature(1.5)
    with torch.no_grad():  # trained-looking BatchNorm statistics, so eval mode differs from train mode
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    return path


def _real_images(n: int = 3) -> list[str]:
    if not NIH.is_dir():
        pytest.skip(f"real chest X-rays not found at {NIH} (set MEDCLASS_DATA)")
    return sorted(str(p) for p in NIH.rglob("*.png"))[:n]


def _adrenal_volumes(n: int = 3) -> torch.Tensor:
    if not ADRENAL.is_file():
        pytest.skip(f"AdrenalMNIST3D not found at {ADRENAL} (set MEDCLASS_DATA)")
    with np.load(ADRENAL) as z:
        vols = z["test_images"][:n].astype(np.float32) / 255.0
    return torch.from_numpy(vols)[:, None]


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_2d_export_matches_pytorch_on_real_images(tmp_path, fmt):
    images = _real_images()
    path = _model_file(tmp_path, 2, 32)
    result = export_model(path, fmt, tmp_path / f"m.{fmt}", check_images=images, preset="cxr", task="multilabel")
    assert result.checked_on.startswith("3 images")
    assert result.max_abs_diff < 1e-4
    # the same comparison done here, independently of export_model's own check
    model, _ = model_from_file(path)
    x = torch.randn(5, 1, 32, 32)  # another batch size than the export's example: the batch axis is dynamic
    assert max_abs_diff(model, load_exported(result.path), x) < 1e-4
    # and it can fail: a model with other weights is told apart
    (tmp_path / "other").mkdir()
    other, _ = model_from_file(_model_file(tmp_path / "other", 2, 32, seed=1))
    assert max_abs_diff(other, load_exported(result.path), x) > 1e-2


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_3d_export_matches_pytorch_on_adrenal_volumes(tmp_path, fmt):
    vols = _adrenal_volumes()
    path = _model_file(tmp_path, 3, 28)
    result = export_model(path, fmt, tmp_path / f"m.{fmt}", check_images=vols)
    assert result.checked_on == "3 given inputs"
    assert result.max_abs_diff < 1e-4
    model, _ = model_from_file(path)
    with torch.no_grad():
        ref = model(vols)
    got = torch.as_tensor(load_exported(result.path)(vols))
    assert got.shape == (3, len(LABELS))
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def test_onnx_metadata_holds_labels_thresholds_and_preprocessing(tmp_path):
    path = _model_file(tmp_path, 2, 32)
    out = export_model(path, "onnx", tmp_path / "m.onnx", preset="cxr", task="multilabel").path
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}  # read with onnx itself
    meta = json.loads(props["medclass"])
    assert json.loads(props["label_names"]) == LABELS
    assert json.loads(props["thresholds"]) == pytest.approx(THRESHOLDS)
    assert meta["label_names"] == LABELS and meta["thresholds"] == pytest.approx(THRESHOLDS)
    assert meta["temperature"] == pytest.approx(1.5)
    assert meta["output"] == "logits" and meta["activation"] == "sigmoid"
    assert meta["preprocessing"]["preset"] == "cxr" and meta["preprocessing"]["image_size"] == [32, 32]
    assert meta["input"]["shape"] == ["batch", 1, 32, 32]
    # the ONNX Runtime module exposes what the workflows read from a medclass network
    ort_model = OnnxModel(out)
    assert ort_model.label_names == LABELS
    torch.testing.assert_close(ort_model.thresholds, torch.tensor(THRESHOLDS))
    assert float(ort_model.temperature) == pytest.approx(1.5)


def test_pt2_and_torchscript_carry_the_metadata(tmp_path):
    path = _model_file(tmp_path, 2, 32)
    for fmt, name in (("pt2", "m.pt2"), ("torchscript", "m.ts")):
        out = export_model(path, fmt, tmp_path / name, preset="cxr", task="multilabel").path
        meta = read_exported_metadata(out)
        assert meta["export_format"] == fmt
        assert meta["label_names"] == LABELS and meta["thresholds"] == pytest.approx(THRESHOLDS)
    extra = {"medclass.json": ""}
    torch.export.load(str(tmp_path / "m.pt2"), extra_files=extra)  # readable without medclass
    assert json.loads(extra["medclass.json"])["label_names"] == LABELS


def test_contradicting_override_names_both_values(tmp_path):
    path = _model_file(tmp_path, 2, 32)
    model, meta = model_from_file(path)
    state = torch.load(path, weights_only=True)
    state["_extra_state"] = encode_metadata({**meta, "task": "multilabel", "preset": "cxr"})
    torch.save(state, path)
    with pytest.raises(ValueError, match="'multilabel'.*'multiclass'"):
        export_model(path, "onnx", tmp_path / "m.onnx", task="multiclass")
    with pytest.raises(ValueError, match="'cxr'.*'generic'"):
        export_model(path, "onnx", tmp_path / "m.onnx", preset="generic")


@pytest.mark.parametrize("args, expected", [
    (["--format", "tflite"], "unknown export format 'tflite': use one of onnx, pt2, torchscript"),
    (["--format", "onnx"], "no such model file"),
])
def test_bad_export_request_is_one_sentence(tmp_path, capsys, args, expected):
    model = tmp_path / "model.pt" if "tflite" in args else tmp_path / "missing.pt"
    if "tflite" in args:
        _model_file(tmp_path, 2, 32)
    rc = cli_main(["export", str(model), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert expected in err and err.startswith("medclass: error:")
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not list(tmp_path.glob("*.onnx"))


def test_cli_export_prints_the_difference(tmp_path, capsys):
    path = _model_file(tmp_path, 2, 32)
    assert cli_main(["export", str(path), "--format", "onnx", "--preset", "cxr", "--task", "multilabel"]) == 0
    out = capsys.readouterr().out
    assert "max abs difference" in out and str(tmp_path / "model.onnx") in out
    assert (tmp_path / "model.onnx").is_file()

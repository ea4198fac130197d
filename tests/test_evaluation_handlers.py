"""OperatingPointSelector on a plain ignite engine: thresholds from validation logits, stored with the model."""

import json

import numpy as np
import pytest
import torch
from ignite.engine import Engine

from medclass.handlers import OperatingPointSelector
from medclass.metrics import choose_thresholds, fit_temperature, probabilities
from medclass.networks import build_classifier

NAMES = ["a", "b"]


def _engine(logits: torch.Tensor, labels: torch.Tensor, batch: int = 16) -> Engine:
    chunks = [(logits[i:i + batch], labels[i:i + batch], [f"v{j}" for j in range(i, min(i + batch, len(logits)))])
              for i in range(0, len(logits), batch)]

    def step(engine, data):
        lg, lb, ids = data
        engine.state.batch = {"id": ids}
        return [{"pred": p, "label": y} for p, y in zip(lg, lb)]

    return Engine(step), chunks


@pytest.fixture()
def setup(tmp_path):
    rng = np.random.default_rng(0)
    y = (rng.random((120, 2)) < 0.4).astype(np.float32)
    y[:6, 1] = np.nan
    logits = (2.5 * np.nan_to_num(y) - 1.2 + rng.normal(size=y.shape)).astype(np.float32) * 2.0
    net = build_classifier("resnet18", 2, 1, 2, image_size=32, width=8, label_names=NAMES)
    torch.save(net.state_dict(), tmp_path / "model.pt")
    return net, torch.from_numpy(logits), torch.from_numpy(y), tmp_path


def test_thresholds_and_temperature_are_chosen_and_stored(setup):
    net, logits, y, tmp = setup
    sel = OperatingPointSelector(net, NAMES, operating_point={"a": "youden", "b": "specificity:0.9"},
                                 temperature_scaling=True, model_path=tmp / "model.pt", ckpt_dir=tmp,
                                 output_dir=tmp / "eval")
    engine, data = _engine(logits, y)
    sel.attach(engine)
    engine.run(data, max_epochs=1)
    t = fit_temperature(logits.numpy(), y.numpy())
    expected = choose_thresholds(y.numpy(), probabilities(logits.numpy(), temperature=t), NAMES,
                                 {"a": "youden", "b": "specificity:0.9"})
    assert sel.result["temperature"] == pytest.approx(t) and t != pytest.approx(1.0, abs=0.05)
    stored = torch.load(tmp / "model.pt", weights_only=True)
    assert stored["thresholds"].tolist() == pytest.approx([c["threshold"] for c in expected], abs=1e-6)
    assert stored["temperature"].item() == pytest.approx(t, rel=1e-5)
    assert net.thresholds.tolist() == pytest.approx(stored["thresholds"].tolist())
    saved = json.loads((tmp / "thresholds.json").read_text())
    assert [c["method"] for c in saved["labels"]] == ["youden", "specificity"]
    assert saved["labels"][1]["specificity"] >= 0.9
    rows = (tmp / "eval" / "validation_predictions.csv").read_text().splitlines()
    assert rows[0] == "id,prob_a,prob_b,label_a,label_b" and len(rows) == 121 and rows[1].endswith(",")


def test_null_operating_point_keeps_the_stored_thresholds(setup):
    net, logits, y, tmp = setup
    net.set_thresholds([0.3, 0.7])
    sel = OperatingPointSelector(net, NAMES, operating_point=None, model_path=tmp / "model.pt")
    engine, data = _engine(logits, y)
    sel.attach(engine)
    engine.run(data, max_epochs=1)
    assert net.thresholds.tolist() == pytest.approx([0.3, 0.7])
    assert [c["method"] for c in sel.result["labels"]] == ["stored", "stored"]
    assert torch.load(tmp / "model.pt", weights_only=True)["thresholds"].tolist() == pytest.approx([0.3, 0.7])


def test_refuses_the_test_split_and_bad_specs(setup):
    net, *_ = setup
    with pytest.raises(ValueError, match="never on 'test'"):
        OperatingPointSelector(net, NAMES, split="test")
    with pytest.raises(ValueError, match="unknown operating point"):
        OperatingPointSelector(net, NAMES, operating_point="median")


def test_three_validation_positives_fall_back_and_the_model_file_says_so(setup):
    """Label b has 3 validation positives (< min_positives 10): its threshold is the validation-score quantile at
    its training prevalence, not Youden on 3 cases, and thresholds.json and model.pt record that; label a (about
    48 positives) is chosen on validation."""
    from medclass.handlers.evaluation import stored_provenance

    net, logits, y, tmp = setup
    y = y.clone()
    pos_b = torch.nonzero(y[:, 1] == 1).ravel()
    y[pos_b[3:], 1] = 0.0  # three positives left
    training = [{"id": f"t{i}", "label": [float(i % 4 == 0), float(i % 10 == 0)]} for i in range(200)]  # b: 10%
    sel = OperatingPointSelector(net, NAMES, operating_point="youden", model_path=tmp / "model.pt", ckpt_dir=tmp,
                                 min_positives=10, training_items=training)
    engine, data = _engine(logits, y)
    sel.attach(engine)
    engine.run(data, max_epochs=1)
    a, b = sel.result["labels"]
    assert a["chosen_by"] == "validation" and a["fallback"] is None
    assert b["chosen_by"] == "fallback" and b["positives"] == 3
    assert "3 positive and" in b["fallback"] and "training prevalence 0.1" in b["fallback"]
    probs = probabilities(logits.numpy())[:, 1]
    k = round(0.1 * len(probs))  # all 120 validation scores, known label or not
    assert b["threshold"] == pytest.approx(np.sort(probs)[::-1][k - 1], abs=1e-6)
    youden = choose_thresholds(y.numpy(), probabilities(logits.numpy()), NAMES, "youden", min_positives=1)
    assert youden[1]["threshold"] != pytest.approx(b["threshold"])  # what Youden on 3 cases would have said
    saved = json.loads((tmp / "thresholds.json").read_text())
    assert saved["fallbacks"] == ["b"] and saved["training_prevalence"] == {"a": 0.25, "b": 0.1}
    prov = stored_provenance(tmp / "model.pt")
    assert prov["labels"]["b"]["chosen_by"] == "fallback" and prov["labels"]["a"]["chosen_by"] == "validation"
    assert prov["min_positives"] == 10
    # the provenance rides in the model's metadata: the file still loads into a fresh network, strictly
    fresh = build_classifier("resnet18", 2, 1, 2, image_size=32, width=8, label_names=NAMES)
    fresh.load_state_dict(torch.load(tmp / "model.pt", weights_only=True))
    assert fresh.thresholds.tolist() == pytest.approx([a["threshold"], b["threshold"]], abs=1e-6)

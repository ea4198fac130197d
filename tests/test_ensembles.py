"""Ensembles, test-time augmentation and uncertainty (issue 21): the maths on tiny networks, the model file, the
referral curve on a constructed case. The workflows run in tests/bundles/test_ensemble_bundle.py."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from medclass.ensembles import combine_members, ensemble_plan, parse_ensemble
from medclass.errors import SettingError
from medclass.exports import model_from_file
from medclass.handlers.evaluation import store_operating_point
from medclass.inferers import PredictionInferer, resolve_tta, tta_views
from medclass.metrics.referral import case_uncertainty, referral_curve
from medclass.networks import Ensemble, build_classifier, read_model_record
from medclass.saliency import saliency_maps

LABELS = ["a", "b", "c"]


def tiny(seed: int, dims: int = 2, classes: int = 3, dropout: float = 0.0):
    torch.manual_seed(seed)
    size = [16] * dims
    return build_classifier("resnet18", dims, 1, classes, size, width=4, label_names=LABELS[:classes],
                            dropout=dropout).eval()


@pytest.mark.parametrize("task", ["multilabel", "multiclass"])
def test_ensemble_output_is_the_mean_of_the_member_probabilities(task):
    a, b = tiny(0), tiny(1)
    ens = Ensemble([a, b], task=task).eval()
    x = torch.randn(4, 1, 16, 16)
    act = (lambda z: torch.softmax(z, 1)) if task == "multiclass" else torch.sigmoid
    with torch.no_grad():
        expected = (act(a(x)) + act(b(x))) / 2
        got = act(ens(x))
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(act(a(x)), act(b(x)), atol=1e-3)  # the members do differ


def test_ensemble_refuses_members_of_another_architecture():
    with pytest.raises(ValueError, match="differs from member 0 in .*width"):
        Ensemble([tiny(0), build_classifier("resnet18", 2, 1, 3, [16, 16], width=8, label_names=LABELS)])
    with pytest.raises(ValueError, match="at least 2"):
        Ensemble([tiny(0)])


def test_model_file_round_trip_and_record(tmp_path):
    members = []
    for s in (0, 1):
        m = tiny(s)
        m.settings["task"] = "multilabel"
        path = tmp_path / f"member_{s}" / "model.pt"
        path.parent.mkdir()
        torch.save(m.state_dict(), path)
        members.append(path)
    out = combine_members(members, tmp_path / "model.pt", by="seed", details={"seeds": [0, 1]})
    record = read_model_record(out)
    assert record["ensemble"]["members"] == 2 and record["ensemble"]["by"] == "seed"
    assert record["ensemble"]["seeds"] == [0, 1] and record["arch"] == "resnet18" and record["label_names"] == LABELS
    assert read_model_record(members[0])["ensemble"] is None
    state = torch.load(out, weights_only=True)  # an untrusted file loads without pickle code
    assert "members.1.backbone.fc.weight" in state
    model, meta = model_from_file(out)  # rebuilt from the file alone
    assert isinstance(model, Ensemble) and meta["ensemble"]["members"] == 2
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        expected = (torch.sigmoid(tiny(0)(x)) + torch.sigmoid(tiny(1)(x))) / 2
        assert torch.allclose(torch.sigmoid(model(x)), expected, atol=1e-6)
    # a file of 2 members does not load into an ensemble of 3
    with pytest.raises(Exception, match="2 members"):
        Ensemble.replicate(tiny(0), 3).load_state_dict(state)
    with pytest.raises(ValueError, match="already an ensemble"):
        combine_members([out, members[0]], tmp_path / "again.pt")


def test_uncertainty_is_zero_for_identical_members_and_grows_with_disagreement():
    base = tiny(0)
    x = torch.randn(3, 1, 16, 16)
    spreads = []
    for scale in (0.0, 0.5, 2.0):
        other = copy.deepcopy(base)
        with torch.no_grad():
            other.backbone.fc.bias += scale  # the second member disagrees by this much on the logits
        inferer = PredictionInferer()
        with torch.no_grad():
            inferer(x, Ensemble([base, other]).eval())
        spreads.append(float(inferer.last_spread.mean()))
    assert spreads[0] == pytest.approx(0.0, abs=1e-7)
    assert 0 < spreads[1] < spreads[2]
    # a single model without TTA returns its own logits, and no uncertainty
    inferer = PredictionInferer()
    with torch.no_grad():
        assert torch.equal(inferer(x, base), base(x))
    assert inferer.last_spread is None


@pytest.mark.parametrize("dims", [2, 3])
def test_tta_of_a_flip_invariant_input_equals_the_plain_output(dims):
    model = tiny(0, dims=dims)
    x = torch.randn(2, 1, *([16] * dims))
    for axis in range(2, 2 + dims):
        x = (x + torch.flip(x, dims=(axis,))) / 2  # symmetric along every axis
    inferer = PredictionInferer(tta="flip")
    with torch.no_grad():
        plain, tta = torch.sigmoid(model(x)), torch.sigmoid(inferer(x, model))
    assert torch.allclose(tta, plain, atol=1e-5)
    assert float(inferer.last_spread.max()) < 1e-5
    assert len(tta_views("flip", dims)) == 1 + dims and len(tta_views("flip_shift", dims)) == 1 + 3 * dims
    # an asymmetric input: the views differ, so TTA changes the output and the spread is not 0
    y = torch.randn(2, 1, *([16] * dims))
    with torch.no_grad():
        inferer(y, model)
    assert float(inferer.last_spread.max()) > 0


def test_tta_shift_moves_the_image_without_wrapping_around():
    x = torch.arange(5.0).reshape(1, 1, 1, 5)
    views = tta_views("shift", 2)
    assert views[0](x) is x
    moved = [v(x).flatten().tolist() for v in views[1:]]
    assert [0.0, 0.0, 1.0, 2.0, 3.0] in moved and [1.0, 2.0, 3.0, 4.0, 4.0] in moved


def test_settings_of_tta_mc_dropout_and_ensemble_are_checked(tmp_path):
    with pytest.raises(ValueError, match="tta must be one of"):
        PredictionInferer(tta="rotate")
    with pytest.raises(ValueError, match="mc_dropout"):
        PredictionInferer(mc_dropout=-1)
    assert resolve_tta("auto", None) == "none" and resolve_tta("flip", None) == "flip"
    # auto: what the model file records; none / null: off, whatever it records
    model = tiny(0)
    model.settings["task"] = "multilabel"
    torch.save(model.state_dict(), tmp_path / "model.pt")
    store_operating_point(tmp_path / "model.pt", [0.5] * 3, 1.0, {"split": "validation", "tta": "flip"})
    assert resolve_tta("auto", tmp_path / "model.pt") == "flip"
    assert resolve_tta("none", tmp_path / "model.pt") == resolve_tta(None, tmp_path / "model.pt") == "none"
    with pytest.raises(ValueError, match="mc_dropout needs a model with dropout"):
        PredictionInferer(mc_dropout=4)(torch.randn(1, 1, 16, 16), tiny(0))
    assert parse_ensemble({"members": 3}) == (3, "seed")
    assert parse_ensemble({"members": 2, "by": "fold"}) == (2, "fold")
    for bad in ({"members": 1}, {"members": 2, "by": "bootstrap"}, {"k": 2}, 3):
        with pytest.raises(SettingError, match="setting ensemble"):
            parse_ensemble(bad)
    assert [p["seed"] for p in ensemble_plan(3, "fold", 5)] == [5, 6, 7]


def test_mc_dropout_gives_a_spread_and_restores_eval_mode():
    model = tiny(0, dropout=0.5)
    inferer = PredictionInferer(mc_dropout=8)
    torch.manual_seed(0)
    with torch.no_grad():
        inferer(torch.randn(2, 1, 16, 16), model)
    assert float(inferer.last_spread.max()) > 0
    assert not any(m.training for m in model.modules())


def test_ensemble_saliency_is_the_mean_of_the_member_maps():
    a, b = tiny(0), tiny(1)
    x = torch.randn(2, 1, 16, 16)
    maps = saliency_maps(Ensemble([a, b]), x, targets=["b"], method="gradcam")
    expected = (saliency_maps(a, x, targets=["b"]) + saliency_maps(b, x, targets=["b"])) / 2
    assert maps.shape == (2, 1, 16, 16) and torch.allclose(maps, expected, atol=1e-6)


def test_referral_curve_on_a_constructed_case():
    labels = np.array([[1], [0], [1], [0]], dtype=float)
    probs = np.array([[0.9], [0.1], [0.4], [0.6]])  # the last two are wrong at 0.5
    uncertainty = np.array([[0.01], [0.02], [0.3], [0.2]])  # and the most uncertain
    curve = referral_curve(labels, probs, uncertainty, 0.5, fractions=(0.0, 0.25, 0.5))
    assert curve["referred"] == [0, 1, 2] and curve["retained"] == [4, 3, 2]
    assert curve["mean_auc"][0] == pytest.approx(0.75) and curve["accuracy"][0] == pytest.approx(0.5)
    assert curve["accuracy"][1] == pytest.approx(2 / 3)
    assert curve["mean_auc"][2] == pytest.approx(1.0) and curve["accuracy"][2] == pytest.approx(1.0)
    assert curve["order"] == [2, 3, 1, 0]
    # uncertainty that ranks the correct cases first makes the retained cases worse
    worse = referral_curve(labels, probs, 1 - uncertainty, 0.5, fractions=(0.5,))
    assert worse["accuracy"][0] == 0.0
    # a case's score is its most uncertain label; NaN labels are ignored
    assert case_uncertainty([[0.1, 0.3], [math.nan, 0.2], [math.nan, math.nan]]).tolist() == [0.3, 0.2, 0.0]
    with pytest.raises(ValueError, match="fractions"):
        referral_curve(labels, probs, uncertainty, fractions=(1.0,))


def test_a_fold_ensemble_that_dies_keeps_its_finished_members_and_resumes(tmp_path):
    from medclass.data import read_split_file
    from medclass.ensembles import train_ensemble
    from tests.bundles.test_bundles import ROOT, TINY

    bundle = ROOT / "cxr_classification"
    tiny = TINY["cxr_classification"]
    overrides = {"ensemble": {"members": 3, "by": "fold"}, "dataset_dir": str(tmp_path / "data"),
                 "ckpt_dir": str(tmp_path / "models"), "phantoms": tiny["phantoms"], "seed": 4}
    runs = []

    def fake_train(member, fail_on=None):  # stands in for the train workflow: writes a tiny model.pt
        runs.append(member)
        if member["seed"] == fail_on:
            raise RuntimeError("power cut")
        m = build_classifier("resnet18", 2, 1, 4, [16, 16], width=4, label_names=["nodule", "effusion",
                                                                                  "cardiomegaly", "pneumothorax"])
        torch.save(m.state_dict(), tmp_path / "models" / "members" / f"member_{member['seed'] - 4}" / "model.pt")

    with pytest.raises(RuntimeError, match="power cut"):
        train_ensemble(bundle, overrides, lambda m: fake_train(m, fail_on=5))
    assert [r["seed"] for r in runs] == [4, 5]
    members = tmp_path / "models" / "members"
    assert (members / "member_0" / "member.json").is_file() and not (members / "member_1" / "member.json").exists()
    runs.clear()
    out = train_ensemble(bundle, overrides, fake_train)
    assert [r["seed"] for r in runs] == [5, 6]  # member 0 is not trained again
    assert read_model_record(out)["ensemble"]["folds"] == [0, 1, 2]
    splits = [read_split_file(members / f"member_{i}" / "fold_split.csv") for i in range(3)]
    assert runs[0]["split_file"] == str(members / "member_1" / "fold_split.csv")
    validation = [{k for k, v in s.items() if v == "validation"} for s in splits]
    assert not (validation[0] & validation[1]) and not (validation[1] & validation[2])  # disjoint folds
    assert validation[0] | validation[1] | validation[2] == {k for k, v in splits[0].items() if v != "test"}
    assert {k for k, v in splits[0].items() if v == "test"} == {k for k, v in splits[2].items() if v == "test"}
    # another plan over the finished members stops before any training, naming the folder
    runs.clear()
    with pytest.raises(SettingError, match="member_0 holds a finished ensemble member"):
        train_ensemble(bundle, {**overrides, "ensemble": {"members": 3, "by": "seed"}}, fake_train)
    assert runs == []


def test_report_adds_the_referral_curve_and_the_cases_to_look_at_first(tmp_path):
    import csv

    from medclass.report import build_report

    rng = np.random.default_rng(0)
    n = 40
    labels = rng.integers(0, 2, n)
    probs = np.clip(labels * 0.6 + rng.uniform(0, 0.4, n), 0, 1)
    wrong = rng.choice(n, 8, replace=False)
    probs[wrong] = 1 - probs[wrong]  # eight mistakes, and the model is unsure of exactly those
    unc = np.where(np.isin(np.arange(n), wrong), 0.3, 0.01)
    for with_uncertainty, folder in ((True, tmp_path / "a"), (False, tmp_path / "b")):
        folder.mkdir()
        with open(folder / "predictions.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "prob_x", "threshold_x", "pred_x"] + ["uncertainty_x"] * with_uncertainty + ["label_x"])
            for i in range(n):
                w.writerow([f"zqx{i}", probs[i], 0.5, int(probs[i] >= 0.5)] + [unc[i]] * with_uncertainty
                           + [labels[i]])
        metrics = build_report(folder, task="binary", n_bootstrap=10)
        html = (folder / "report.html").read_text()
        if not with_uncertainty:
            assert "referral" not in metrics and "Uncertainty and referral" not in html
            continue
        ref = metrics["referral"]
        assert ref["accuracy"][0] == pytest.approx(0.8) and ref["accuracy"][ref["fractions"].index(0.2)] == 1.0
        assert {c["row"] - 1 for c in ref["look_first"][:8]} == set(wrong.tolist())
        assert "Uncertainty and referral" in html and "zqx" not in html.split("Uncertainty and referral")[1]
        ranked = list(csv.DictReader(open(folder / "referral.csv")))
        assert {r["id"] for r in ranked[:8]} == {f"zqx{i}" for i in wrong}

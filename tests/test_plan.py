"""The self-configured recipe (issue 21): the plan's documented choices on small fake fingerprints, explicit
settings win, a tiny bundle training writes models/plan.json beside the model, and quality.py's --seeds summary."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from medclass.data import Datalist
from medclass.errors import SettingError
from medclass.plan import (
    BATCH_CELLS,
    MIN_STEPS,
    PLANNED,
    WORK_BUDGET,
    choose_plan,
    data_fingerprint,
    resolve_plan,
)
from medclass.settings import check_settings
from tests.conftest import error_chain

BUNDLES = Path(__file__).resolve().parent.parent / "bundles"


def fake(n, dims, size, prevalence=(0.5,), task="multilabel", **kw):
    """A fingerprint as data_fingerprint makes it, without data."""
    fp = data_fingerprint(None, dims, size)
    fp.update(n_training=n, task=task, prevalence={f"label{i}": p for i, p in enumerate(prevalence)}, **kw)
    return fp


def test_a_pneumoniamnist_like_set_gets_the_recipe_that_beat_the_baseline():
    """The anchor: 4,708 images of 28 px, 74% positive -> about the fixed recipe (30 epochs, batch 64, 2e-3)."""
    plan = choose_plan(fake(4708, 2, 28, (0.74,)))
    assert plan == {"batch_size": 64, "max_epochs": 27, "learning_rate": 0.002, "warmup_epochs": 2.0, "width": 32,
                    "augment": {}, "label_smoothing": 0.1, "pos_weight": False, "early_stop_patience": 9}
    assert set(plan) == set(PLANNED)


def test_tiny_2d_set_small_batch_narrow_net_many_epochs():
    fp = fake(40, 2, 64)
    assert fp["stem"] == "medium" and fp["cells"] == 32 * 32
    plan = choose_plan(fp)
    assert plan["batch_size"] == 4  # an eighth of 40 items, a power of two: 8 steps per epoch at least
    assert plan["width"] == 16  # under 500 training items
    assert plan["max_epochs"] == 100  # the budget would allow thousands: capped
    assert plan["learning_rate"] == pytest.approx(0.00071)  # 2e-3 * sqrt(4 / 32)
    assert plan["early_stop_patience"] == 34 and plan["warmup_epochs"] == 2.0


def test_large_2d_set_one_epoch_within_the_budget():
    fp = fake(100_000, 2, 28)
    plan = choose_plan(fp)
    assert plan["max_epochs"] == 1 and plan["batch_size"] == 64 and plan["width"] == 32
    assert plan["max_epochs"] * fp["n_training"] * fp["cells"] <= WORK_BUDGET
    assert plan["warmup_epochs"] == 0.1 and plan["early_stop_patience"] == 3


def test_28_cubed_volumes_follow_the_fixed_3d_recipe():
    fp = fake(1188, 3, 28, (0.22,))
    assert fp["stem"] == "medium" and fp["cells"] == 14 ** 3
    plan = choose_plan(fp)
    assert plan["batch_size"] == 32 and plan["max_epochs"] == 30 and plan["width"] == 32
    assert plan["augment"] == {"rotate_deg": 10, "zoom": 0.1, "translate": 0.05}
    assert plan["pos_weight"] is False and plan["label_smoothing"] == 0.1


def test_64_cubed_volumes_bounded_by_memory_and_at_least_600_steps():
    fp = fake(1188, 3, 64)
    plan = choose_plan(fp)
    assert plan["batch_size"] == 8 and plan["batch_size"] * fp["cells"] <= BATCH_CELLS
    steps = plan["max_epochs"] * (1188 // plan["batch_size"])
    assert steps >= MIN_STEPS and (plan["max_epochs"] - 1) * (1188 // plan["batch_size"]) < MIN_STEPS
    assert plan["learning_rate"] == pytest.approx(0.001)  # 2e-3 * sqrt(8 / 32)


def test_rare_labels_weight_positives_and_drop_smoothing():
    plan = choose_plan(fake(5000, 2, 64, (0.3, 0.02, None), task="multilabel"))
    assert plan["pos_weight"] is True and plan["label_smoothing"] == 0.0
    common = choose_plan(fake(5000, 2, 64, (0.3, 0.2)))
    assert common["pos_weight"] is False and common["label_smoothing"] == 0.1
    # multi-class: softmax has no pos_weight, and cross-entropy spreads smoothing over the classes
    multiclass = choose_plan(fake(5000, 2, 64, (0.95, 0.05), task="multiclass"))
    assert multiclass["pos_weight"] is False and multiclass["label_smoothing"] == 0.1


def test_vit_and_pretrained_starts_keep_their_own_width():
    assert choose_plan(fake(5000, 2, 64, arch="vit"))["width"] is None
    assert choose_plan(fake(5000, 2, 64, pretrained=True))["width"] is None


def test_explicit_settings_win_and_the_rules_that_follow_use_them():
    fp = fake(4708, 2, 28, (0.74,))
    plan = choose_plan(fp, {"batch_size": 8, "max_epochs": 6, "width": 64, "augment": False, "pos_weight": "true",
                            "learning_rate": "auto", "early_stop_patience": None})
    assert plan["batch_size"] == 8 and plan["max_epochs"] == 6 and plan["width"] == 64 and plan["augment"] is False
    assert plan["pos_weight"] == "true" and plan["early_stop_patience"] is None  # null: early stopping off
    assert plan["learning_rate"] == pytest.approx(0.001)  # chosen from the given batch of 8
    assert plan["warmup_epochs"] == 0.6  # a tenth of the given 6 epochs


def test_resolve_plan_records_what_was_explicit():
    settings = {"spatial_dims": 2, "image_size": [28, 28], "in_channels": 1, "arch": "resnet18", "pretrained": None,
                **{k: "auto" for k in PLANNED}, "batch_size": 16, "width": "AUTO"}
    plan = resolve_plan(settings)
    assert plan.explicit == ["batch_size"] and plan["batch_size"] == 16 and plan["width"] == 32
    assert plan.chosen["batch_size"] == 64  # what the rules alone chose (no data: counts taken as large)
    assert plan.fingerprint["stem"] == "small" and "n_training" not in plan.fingerprint
    assert plan.fingerprint["arch"] == "resnet18" and plan.fingerprint["pretrained"] is False
    with pytest.raises(ValueError, match="setting image_size / spatial_dims"):
        resolve_plan({**settings, "image_size": "big"})


def test_fingerprint_counts_training_labels_without_reading_images():
    items = [{"image": f"/nowhere/{i}.png", "id": str(i), "label": np.asarray(lab, dtype=np.float32)}
             for i, lab in enumerate([[1, 0], [0, np.nan], [1, 0], [0, 0]])]
    other = [{**items[0], "id": "v"}], [{**items[0], "id": "t"}]
    data = Datalist(splits={"training": items, "validation": other[0], "test": other[1]}, label_names=["a", "b"],
                    task="multilabel")
    fp = data_fingerprint(data, 2, 64, in_channels=3, stem="small")
    assert fp["n_training"] == 4 and fp["n_validation"] == 1 and fp["num_labels"] == 2 and fp["in_channels"] == 3
    assert fp["prevalence"] == {"a": 0.5, "b": 0.0}  # b: 0 of 3 known
    assert fp["stem"] == "small" and fp["cells"] == 64 * 64  # an explicit stem sets the cost


def test_settings_accept_auto_only_for_planned_settings():
    check_settings({k: "auto" for k in PLANNED})
    with pytest.raises(SettingError, match="setting seed"):
        check_settings({"seed": "auto"})
    with pytest.raises(SettingError, match="setting max_epochs"):
        check_settings({"max_epochs": "automatic"})


def test_training_writes_the_plan_beside_the_model(tmp_path):
    """A tiny 2D phantom training: the auto settings come from the plan, the given ones win, plan.json is written
    beside model.pt and the model file's fingerprint records the planned values (not `auto`)."""
    from monai.bundle import ConfigWorkflow

    from medclass import bundle_tools as bt
    from medclass.networks import read_model_record

    bundle = BUNDLES / "cxr_classification"

    def train(**overrides):
        wf = ConfigWorkflow(config_file=bt.config_files(bundle, "train.yaml"), workflow_type="train",
                            meta_file=str(bundle / "configs" / "metadata.json"), bundle_root=str(bundle),
                            dataset_dir=str(tmp_path / "data"), ckpt_dir=str(tmp_path / "models"),
                            output_dir=str(tmp_path / "eval"), log_dir=str(tmp_path / "runs"), progress_bar=False,
                            image_size=[64, 64], phantoms={"n": 48, "size": 64, "seed": 1}, max_epochs=1,
                            batch_size=8, **overrides)
        wf.initialize()
        wf.run()
        wf.finalize()

    train()
    plan = json.loads((tmp_path / "models" / "plan.json").read_text())
    assert plan["explicit"] == ["batch_size", "max_epochs"]
    assert plan["settings"]["batch_size"] == 8 and plan["settings"]["max_epochs"] == 1
    assert plan["fingerprint"]["n_training"] == 33 and plan["fingerprint"]["image_size"] == [64, 64]
    assert plan["settings"]["width"] == 16 == plan["chosen"]["width"]  # 33 training items: the narrow net
    assert plan["chosen"]["batch_size"] == 4  # what the plan would have used
    record = read_model_record(tmp_path / "models" / "model.pt")
    assert record["width"] == 16
    trained = record["fingerprint"]["settings"]
    assert trained["width"] == 16 and trained["learning_rate"] == plan["settings"]["learning_rate"]
    assert trained["early_stop_patience"] == plan["settings"]["early_stop_patience"]
    # resume compares the recipe as planned: another learning rate is another run, named with the planned value
    with pytest.raises(Exception) as err:
        train(learning_rate=0.01)
    assert f"learning_rate: {plan['settings']['learning_rate']} in the saved run, 0.01 now" in error_chain(err.value)


def _quality():
    from tests.test_benchmarks import _quality as load

    return load()


def test_quality_seeds_summary_gives_mean_and_spread():
    quality = _quality()
    runs = [{"dataset": "x", "seed": s, "test_auc": auc, "test_acc": acc, "train_seconds": t, "eval_seconds": 1.0,
             "test_auc_ci95": [0.1, 0.9], "arch": "resnet18", "evaluate_only": False, "recipe_source": "plan",
             "per_label_auc": {"a": auc, "b": None}, "recipe": {"max_epochs": 3}}
            for s, auc, acc, t in ((0, 0.8, 0.7, 10.0), (1, 0.9, None, 12.0), (2, 0.85, 0.8, 11.0))]
    out = quality.seeds_summary(runs)
    assert out["seeds"] == [0, 1, 2] and out["n_seeds"] == 3
    auc = out["seeds_summary"]["test_auc"]
    assert auc["mean"] == 0.85 and auc["min"] == 0.8 and auc["max"] == 0.9 and auc["n"] == 3
    assert auc["std"] == pytest.approx(0.05)
    acc = out["seeds_summary"]["test_acc"]  # one run without the figure: summarised over the other two
    assert acc["n"] == 2 and acc["mean"] == 0.75 and acc["std"] == pytest.approx(math.sqrt(0.005), abs=1e-4)
    assert out["seeds_summary"]["per_label_auc.a"]["mean"] == 0.85 and "per_label_auc.b" not in out["seeds_summary"]
    assert "seed" not in out["seeds_summary"] and "arch" not in out["seeds_summary"]
    assert out["per_seed"]["test_auc"] == [0.8, 0.9, 0.85]
    assert [s["train_seconds"] for s in out["seconds"]] == [10.0, 12.0, 11.0]
    single = quality.seeds_summary(runs[:1])["seeds_summary"]["test_auc"]
    assert single["std"] is None and single["mean"] == 0.8
    with pytest.raises(ValueError, match="no runs"):
        quality.seeds_summary([])


def test_quality_refuses_zero_seeds(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _quality().main(["--npz", str(tmp_path / "x.npz"), "--seeds", "0"])
    assert "--seeds must be >= 1" in capsys.readouterr().err


def test_monai_label_app_leaves_auto_epochs_to_the_plan():
    """The MONAI Label app reads the bundle's max_epochs: `auto` stays `auto` (the plan chooses at training)."""
    from medclass.label.bundle import BundleModel

    assert BundleModel(BUNDLES / "cxr_classification").max_epochs == "auto"

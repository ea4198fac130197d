"""Every bundle (2D chest X-ray, 3D volume): property checks, metadata schema, network I/O, and
train/evaluate/infer/export/resume on a tiny synthetic phantom set (each bundle's offline default)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from medclass import bundle_tools as bt
from medclass.networks import Classifier
from tests.conftest import error_chain

ROOT = Path(__file__).resolve().parents[2] / "bundles"
TINY = {
    "cxr_classification": {"image_size": [64, 64], "width": 8, "batch_size": 8,
                           "phantoms": {"n": 48, "size": 64, "seed": 1}},
    "volume_classification": {"image_size": [32, 32, 32], "width": 8, "batch_size": 4,
                              "phantoms": {"n": 36, "size": 32, "seed": 1, "spatial_dims": 3}},
}
LABELS = {"cxr_classification": ["nodule", "effusion", "cardiomegaly", "pneumothorax"],
          "volume_classification": ["mass", "cyst", "calcification"]}
SUFFIX = {"cxr_classification": ".png", "volume_classification": ".nii.gz"}


@pytest.fixture(scope="module", params=sorted(TINY))
def bundle(request) -> Path:
    return ROOT / request.param


def workflow(bundle: Path, kind: str, tmp: Path, **overrides):
    from monai.bundle import ConfigWorkflow

    args = {**TINY[bundle.name], "bundle_root": str(bundle), "dataset_dir": str(tmp / "data"),
            "ckpt_dir": str(tmp / "models"), "output_dir": str(tmp / "eval"), "log_dir": str(tmp / "runs"),
            **({"progress_bar": False} if kind == "train" else {}), **overrides}
    wf = ConfigWorkflow(config_file=bt.config_files(bundle, f"{kind}.yaml"),
                        meta_file=str(bundle / "configs" / "metadata.json"),
                        workflow_type="train" if kind == "train" else "inference", **args)
    wf.initialize()
    return wf


@pytest.mark.parametrize("kind", ["train", "inference", "evaluate", "saliency"])
def test_no_missing_properties(bundle, kind, tmp_path):
    # every output in tmp_path: the bundle folder gets nothing (TensorBoard files used to land in bundles/*/runs)
    outputs = {k: str(tmp_path / k) for k in ("ckpt_dir", "output_dir", "log_dir")}
    before = {p for d in ("runs", "eval") for p in (bundle / d).rglob("*")}
    assert bt.check_properties(bundle, kind, dataset_dir=str(tmp_path / "data"), **outputs, **TINY[bundle.name]) == []
    assert {p for d in ("runs", "eval") for p in (bundle / d).rglob("*")} == before


def test_metadata_matches_schema_and_labels(bundle, tmp_path):
    bt.verify_metadata(bundle)
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    common = yaml.safe_load((bundle / "configs" / "common.yaml").read_text())
    out = meta["network_data_format"]["outputs"]["pred"]
    assert list(out["channel_def"].values()) == common["label_names"]
    assert out["num_channels"] == len(common["label_names"])
    assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == common["image_size"]
    assert meta["version"] in meta["changelog"]

    # the schema rejects metadata without label names for the output channels
    broken = dict(meta)
    broken["network_data_format"] = json.loads(json.dumps(meta["network_data_format"]))
    del broken["network_data_format"]["outputs"]["pred"]["channel_def"]
    bad = tmp_path / "configs"
    bad.mkdir()
    (bad / "metadata.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="channel_def"):
        bt.verify_metadata(tmp_path)


def test_net_in_out(bundle):
    bt.verify_net_in_out(bundle)


@pytest.fixture(scope="module")
def trained(bundle, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(bundle.name)
    wf = workflow(bundle, "train", tmp, max_epochs=1)
    wf.run()
    wf.finalize()
    return tmp, wf


def test_cache_on_disk_is_a_config_value(bundle, tmp_path):
    """--cache disk: training and validation items are preprocessed once into cache_dir (data larger than RAM)."""
    from monai.data import PersistentDataset

    wf = workflow(bundle, "train", tmp_path, cache="disk", cache_dir=str(tmp_path / "cache"))
    for key, split in (("train#dataset", "training"), ("validate#dataset", "validation")):
        ds = wf.parser.get_parsed_content(key)
        assert isinstance(ds, PersistentDataset)
        assert ds[0]["image"].shape[1:] == tuple(TINY[bundle.name]["image_size"])
        dtype = "uint8" if bundle.name == "cxr_classification" else "float16"  # cache_dtype auto, packed on disk
        assert len(list((tmp_path / "cache" / split / dtype).iterdir())) == 1


def test_cache_auto_chooses_from_the_budget_and_memory_warns_before_training(bundle, tmp_path, caplog):
    """cache: auto takes memory when the packed items fit memory_budget, disk when not; an explicit memory cache
    over the budget is kept but warned about when the workflow is built, before any epoch."""
    import logging

    from medclass.data.cache import CompactCacheDataset, CompactPersistentDataset

    caplog.set_level(logging.INFO, logger="medclass.data.cache")
    # the bundle's logging.conf replaces the root logger's handlers (caplog's among them): listen on the module's
    logger = logging.getLogger("medclass.data.cache")
    logger.addHandler(caplog.handler)
    try:
        wf = workflow(bundle, "train", tmp_path / "a", cache="auto", memory_budget="1GB")
        assert isinstance(wf.parser.get_parsed_content("train#dataset"), CompactCacheDataset)
        assert "fits the memory budget of 1.00 GB -> memory" in caplog.text
        caplog.clear()
        wf = workflow(bundle, "train", tmp_path / "b", cache="auto", memory_budget="1KB",
                      cache_dir=str(tmp_path / "cache"))
        assert isinstance(wf.parser.get_parsed_content("train#dataset"), CompactPersistentDataset)
        assert "exceeds the memory budget" in caplog.text and "-> disk" in caplog.text
        caplog.clear()
        wf = workflow(bundle, "train", tmp_path / "c", cache="memory", memory_budget="1KB")
        assert isinstance(wf.parser.get_parsed_content("train#dataset"), CompactCacheDataset)
    finally:
        logger.removeHandler(caplog.handler)
    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning and "will likely not fit" in warning[0].getMessage()


def test_train_writes_checkpoints_and_logs(bundle, trained):
    tmp, wf = trained
    best = torch.load(tmp / "models" / "model.pt", weights_only=True)
    last = torch.load(tmp / "models" / "last.pt", weights_only=True)
    assert last["trainer"]["epoch"] == 1
    n = len(LABELS[bundle.name])
    assert torch.allclose(best["thresholds"], torch.full((n,), 0.5))
    meta = Classifier.decode_extra_state(best["_extra_state"])
    assert meta["label_names"] == LABELS[bundle.name]
    assert meta["image_size"] == TINY[bundle.name]["image_size"] and meta["arch"] == "resnet18"
    assert any((tmp / "runs" / "train").iterdir()) and any((tmp / "runs" / "validation").iterdir())  # TensorBoard
    ev = wf.parser.get_parsed_content("validate#evaluator")
    assert 0.0 <= ev.state.metrics["val_mean_auc"] <= 1.0


def test_augmentation_runs_on_training_batches_by_default(bundle, trained):
    """augment_on: batch (the default): the training preprocessing has no random step (cached to its end), the
    trainer augments each batch (and did, in the training run above); validation has neither."""
    from medclass.transforms import BatchAugment, first_random_index

    _, wf = trained
    assert wf.parser.get_parsed_content("augment_on") == "batch"
    pre = wf.parser.get_parsed_content("train#preprocessing")
    assert first_random_index(pre) == len(pre.transforms)
    aug = wf.parser.get_parsed_content("train#trainer").batch_transform
    assert isinstance(aug, BatchAugment) and aug.enabled and aug.spatial_dims == len(TINY[bundle.name]["image_size"])
    assert aug._generator is not None  # drawn from during training
    val = wf.parser.get_parsed_content("validate#preprocessing")
    assert first_random_index(val) == len(val.transforms)
    assert not hasattr(wf.parser.get_parsed_content("validate#evaluator"), "batch_transform")


def test_augmentation_per_sample_trains_and_false_disables_both(bundle, tmp_path):
    from medclass.transforms import first_random_index

    wf = workflow(bundle, "train", tmp_path, max_epochs=1, augment_on="sample")
    pre = wf.parser.get_parsed_content("train#preprocessing")
    assert first_random_index(pre) < len(pre.transforms)  # MONAI random transforms per item
    assert wf.parser.get_parsed_content("train#trainer").batch_transform is None
    wf.run()
    assert torch.load(tmp_path / "models" / "last.pt", weights_only=True)["trainer"]["epoch"] == 1
    for on in ("batch", "sample"):
        wf = workflow(bundle, "train", tmp_path / on, augment=False, augment_on=on)
        pre = wf.parser.get_parsed_content("train#preprocessing")
        assert first_random_index(pre) == len(pre.transforms)
        assert wf.parser.get_parsed_content("train#batch_augment") is None


def test_evaluate_writes_predictions_with_labels_and_metrics(bundle, trained):
    from medclass.metrics import choose_thresholds
    from medclass.report import read_predictions

    tmp, _ = trained
    wf = workflow(bundle, "evaluate", tmp)
    wf.run()
    rows = list(csv.DictReader(open(tmp / "eval" / "predictions.csv")))
    data = wf.parser.get_parsed_content("data")
    assert len(rows) == len(data.splits["test"])
    assert {r["id"] for r in rows} == {it["id"] for it in data.splits["test"]}
    labels = LABELS[bundle.name]
    first = labels[0]
    assert set(rows[0]) >= {"id", f"prob_{first}", f"pred_{first}", f"label_{first}"}
    metrics = json.loads((tmp / "eval" / "metrics.json").read_text())
    assert metrics["n"] == len(rows) and list(metrics["per_label"]) == labels
    for key in ("mean_auc_ci", "macro", "calibration", "bootstrap", "operating_points", "thresholds"):
        assert key in metrics
    assert (tmp / "eval" / "report.html").stat().st_size > 10_000
    assert (tmp / "eval" / "plots" / f"roc_pr_{first}.png").exists()
    # the model card (issue 24): written by the workflow, from the model file and this evaluation
    for name in ("model_card.md", "model_card.html", "model_card.json", "model.json", "data.json"):
        assert (tmp / "eval" / name).is_file(), name
    card = json.loads((tmp / "eval" / "model_card.json").read_text())
    assert card["per_label"] == metrics["per_label"] and card["model"]["label_names"] == labels
    counts = json.loads((tmp / "eval" / "data.json").read_text())["splits"]
    assert {k: v["images"] for k, v in counts.items()} == {k: len(v) for k, v in data.splits.items()}
    assert "<h2>Model and data</h2>" in (tmp / "eval" / "report.html").read_text()
    per_label = list(csv.DictReader(open(tmp / "eval" / "per_label.csv")))
    assert [r["label"] for r in per_label] == labels

    # the thresholds come from the validation split, not the test split, and are stored with the model; the tiny
    # validation split has fewer than min_positives (10) positives per label, so Youden is not chosen on it: every
    # label falls back to the validation-score quantile at its training prevalence, and every output says so
    from medclass.data import label_matrix
    from medclass.handlers.evaluation import stored_provenance

    val = read_predictions(tmp / "eval" / "validation_predictions.csv")
    assert set(val["ids"]) == {it["id"] for it in data.splits["validation"]}
    train = label_matrix(data.splits["training"])
    prevalence = [float((train[:, k] == 1).sum() / (~np.isnan(train[:, k])).sum()) for k in range(len(labels))]
    chosen = choose_thresholds(val["labels"], val["probs"], labels, "youden", min_positives=10, prevalence=prevalence)
    assert all(c["positives"] < 10 and c["chosen_by"] == "fallback" for c in chosen)
    expected = [c["threshold"] for c in chosen]
    stored = json.loads((tmp / "models" / "thresholds.json").read_text())
    assert [c["threshold"] for c in stored["labels"]] == pytest.approx(expected, abs=1e-6)
    assert [c["chosen_by"] for c in stored["labels"]] == ["fallback"] * len(labels)
    assert all("training prevalence" in c["fallback"] for c in stored["labels"])
    assert stored["fallbacks"] == labels and stored["min_positives"] == 10
    provenance = stored_provenance(tmp / "models" / "model.pt")  # the model file says it too
    assert {n: p["chosen_by"] for n, p in provenance["labels"].items()} == dict.fromkeys(labels, "fallback")
    assert sorted(metrics["threshold_fallbacks"]) == sorted(labels)
    assert {r["threshold_chosen_by"] for r in per_label} == {"fallback"} and all(r["threshold_fallback"]
                                                                                for r in per_label)
    assert "threshold(s) not chosen on validation" in (tmp / "eval" / "report.html").read_text()
    assert json.loads((tmp / "eval" / "thresholds.json").read_text()) == stored
    state = torch.load(tmp / "models" / "model.pt", weights_only=True)
    assert state["thresholds"].tolist() == pytest.approx(expected, abs=1e-6)
    assert metrics["thresholds"] == pytest.approx(dict(zip(labels, expected)), abs=1e-6)
    for r in rows:  # test decisions at the validation thresholds
        for name, t in zip(labels, state["thresholds"].tolist()):
            assert int(r[f"pred_{name}"]) == int(float(r[f"prob_{name}"]) >= t - 1e-6)


def test_evaluate_with_temperature_and_target_sensitivity(bundle, trained, tmp_path):
    from medclass.metrics import probabilities
    from medclass.report import read_predictions

    tmp, _ = trained
    model = tmp_path / "model.pt"
    model.write_bytes((tmp / "models" / "model.pt").read_bytes())
    out = tmp_path / "eval"
    workflow(bundle, "evaluate", tmp, model_path=str(model), output_dir=str(out), operating_point="sensitivity:0.9",
             temperature_scaling=True, bootstrap_samples=50, min_positives=1).run()
    chosen = json.loads((tmp_path / "thresholds.json").read_text())
    state = torch.load(model, weights_only=True)
    assert chosen["temperature_scaling"] is True and chosen["temperature"] > 0
    assert state["temperature"].item() == pytest.approx(chosen["temperature"], rel=1e-6)
    for c in chosen["labels"]:  # min_positives 1: chosen on validation wherever it has a positive and a negative
        assert c["method"] == "sensitivity" and c["target"] == 0.9
        assert c["chosen_by"] == ("validation" if c["positives"] and c["negatives"] else "fallback")
        assert c.get("undefined") or c["sensitivity"] >= 0.9
    # test probabilities are the temperature-scaled ones: the same as scaling the unscaled evaluation's logits
    scaled = read_predictions(out / "predictions.csv")
    plain = read_predictions(tmp / "eval" / "predictions.csv")
    assert scaled["ids"] == plain["ids"]
    p = np.clip(plain["probs"], 1e-6, 1 - 1e-6)
    logits = np.log(p / (1 - p))
    assert scaled["probs"] == pytest.approx(probabilities(logits, "multilabel", chosen["temperature"]), abs=2e-3)


def test_training_writes_its_split_and_the_split_file_reproduces_it(bundle, trained, tmp_path):
    """models/split.csv is the split the run trained on; given as split_file it gives that split again, even
    with another split seed (which, without the file, splits differently)."""
    tmp, wf = trained
    data = wf.parser.get_parsed_content("data")
    rows = list(csv.DictReader(open(tmp / "models" / "split.csv")))
    assert list(rows[0]) == ["id", "image", "patient_id", "split"]
    used = {s: [it["id"] for it in items] for s, items in data.splits.items()}
    assert {s: [r["id"] for r in rows if r["split"] == s] for s in used} == used
    patients = {r["id"]: r["patient_id"] for r in rows}
    assert all(patients[it["id"]] == str(it.get("patient_id") or "") for items in data.splits.values() for it in items)

    other = workflow(bundle, "evaluate", tmp, split_seed=7).parser.get_parsed_content("data")
    assert {s: [it["id"] for it in items] for s, items in other.splits.items()} != used  # the file matters
    again = workflow(bundle, "evaluate", tmp, split_seed=7, split_file=str(tmp / "models" / "split.csv"))
    assert {s: [it["id"] for it in items] for s, items in again.parser.get_parsed_content("data").splits.items()} \
        == used
    # the CLI writes the same file for a datalist without training
    out = tmp_path / "split.csv"
    res = subprocess.run([sys.executable, "-m", "medclass.cli", "split", str(tmp / "data" / "datalist.csv"),
                          "--dataset-dir", str(tmp / "data"), "--labels", ",".join(LABELS[bundle.name]),
                          "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert out.read_text() == (tmp / "models" / "split.csv").read_text()


def test_external_validation_never_rechooses_thresholds(bundle, trained, tmp_path):
    """External validation evaluates every image of a second datalist at the thresholds chosen on the internal
    validation split: the model file and its thresholds.json stay byte for byte as they were, the external
    folder's thresholds are the stored ones, and the report compares both evaluations and the data shift."""
    import hashlib

    tmp, _ = trained
    models = tmp_path / "models"
    models.mkdir()
    for f in ("model.pt", "split.csv"):
        (models / f).write_bytes((tmp / "models" / f).read_bytes())
    workflow(bundle, "evaluate", tmp, ckpt_dir=str(models), output_dir=str(tmp_path / "eval"),
             bootstrap_samples=20).run()
    before = {f: hashlib.sha256((models / f).read_bytes()).hexdigest() for f in ("model.pt", "thresholds.json")}
    stored = json.loads((models / "thresholds.json").read_text())
    # site B: the same kind of images with other labels (shuffled), so thresholds chosen on it would differ
    rows = list(csv.DictReader(open(tmp / "data" / "datalist.csv")))[:30]
    names = LABELS[bundle.name]
    rng = np.random.default_rng(0)
    shuffled = rng.permutation(len(rows))
    ext = tmp_path / "site_b.csv"
    with open(ext, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "image", "patient_id", *names])
        for r, k in zip(rows, shuffled):
            w.writerow([r["id"], r["image"], r["patient_id"], *[rows[k][n] for n in names]])
    from monai.bundle import ConfigWorkflow

    args = {**TINY[bundle.name], "bundle_root": str(bundle), "dataset_dir": str(tmp / "data"),
            "ckpt_dir": str(models), "log_dir": str(tmp_path / "runs"), "output_dir": str(tmp_path / "external"),
            "internal_eval_dir": str(tmp_path / "eval"), "external_datalist": str(ext),
            "external_dataset_dir": str(tmp / "data"), "bootstrap_samples": 20, "shift_max_images": 8}
    wf = ConfigWorkflow(config_file=bt.config_files(bundle, "evaluate.yaml", "external.yaml"),
                        meta_file=str(bundle / "configs" / "metadata.json"), workflow_type="inference", **args)
    wf.initialize()
    wf.run()
    assert before == {f: hashlib.sha256((models / f).read_bytes()).hexdigest() for f in ("model.pt", "thresholds.json")}
    out = tmp_path / "external"
    carried = json.loads((out / "thresholds.json").read_text())
    assert [c["threshold"] for c in carried["labels"]] == [c["threshold"] for c in stored["labels"]]
    assert not (out / "validation_predictions.csv").exists()  # nothing ran on a validation split
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 30 and metrics["thresholds"] == {c["label"]: c["threshold"] for c in stored["labels"]}
    pred = list(csv.DictReader(open(out / "predictions.csv")))
    for r in pred:
        for c in stored["labels"]:
            p = float(r[f"prob_{c['label']}"])
            if abs(p - c["threshold"]) > 1e-5:
                assert int(r[f"pred_{c['label']}"]) == int(p >= c["threshold"])
    ex = metrics["external"]
    assert ex["internal_found"] and ex["thresholds_same"] is True and list(ex["per_label"]) == names
    assert all(r["internal"]["positives"] is not None for r in ex["per_label"].values())
    shift = ex["shift"]
    assert shift["training"]["images"] == 8 and shift["external"]["images"] == 8
    assert set(shift["prevalence"]) == set(names)
    assert shift["prevalence"][names[0]]["external"]["known"] == 30
    page = (out / "report.html").read_text()
    assert "External validation" in page and "Data shift against training" in page
    # it refuses to write over the internal evaluation, before writing anything
    internal = sorted(p.name for p in (tmp_path / "eval").iterdir())
    wf = ConfigWorkflow(config_file=bt.config_files(bundle, "evaluate.yaml", "external.yaml"),
                        meta_file=str(bundle / "configs" / "metadata.json"), workflow_type="inference",
                        **{**args, "output_dir": str(tmp_path / "eval")})
    wf.initialize()
    with pytest.raises(Exception) as err:
        wf.run()
    assert "would overwrite the internal evaluation" in error_chain(err.value)
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == internal
    assert "External validation" not in (tmp_path / "eval" / "report.html").read_text()
    # without thresholds chosen first, external validation refuses to run
    (models / "thresholds.json").unlink()
    wf = ConfigWorkflow(config_file=bt.config_files(bundle, "evaluate.yaml", "external.yaml"),
                        meta_file=str(bundle / "configs" / "metadata.json"), workflow_type="inference",
                        **{**args, "output_dir": str(tmp_path / "external2")})
    wf.initialize()
    with pytest.raises(Exception) as err:
        wf.run()
    assert "run the evaluate workflow before external validation" in error_chain(err.value)


def test_inference_on_a_folder_matches_evaluate(bundle, trained, tmp_path):
    tmp, _ = trained
    labels, tiny = LABELS[bundle.name], TINY[bundle.name]
    folder = tmp / "data" / "images"
    eval_rows = {r["id"]: r for r in csv.DictReader(open(tmp / "eval" / "predictions.csv"))}
    # the CLI exactly as the README shows it
    out = tmp_path / "infer"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file",
           "configs/inference.yaml", "--bundle_root", str(bundle),
           "--ckpt_dir", str(tmp / "models"), "--output_dir", str(out), "--input", str(folder),
           "--image_size", json.dumps(tiny["image_size"]), "--width", "8"]
    res = subprocess.run(cmd, cwd=bundle, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert len(rows) == len(list(folder.glob("*" + SUFFIX[bundle.name])))
    assert list(rows[0]) == ["id", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"] + [
        f"{k}_{n}" for k in ("prob", "threshold", "pred") for n in labels]
    first = labels[0]
    matched = 0
    # inference decides at the thresholds the evaluate workflow chose on the validation split and stored
    chosen = json.loads((tmp / "models" / "thresholds.json").read_text())
    threshold = [c["threshold"] for c in chosen["labels"] if c["label"] == first][0]
    assert torch.load(tmp / "models" / "model.pt", weights_only=True)["thresholds"][0].item() == \
        pytest.approx(threshold, abs=1e-6)
    for r in rows:
        prob = float(r[f"prob_{first}"])
        if abs(prob - threshold) > 1e-5:  # the CSV rounds to 6 decimals; Youden thresholds sit on data values
            assert int(r[f"pred_{first}"]) == int(prob >= threshold)
        if r["id"] in eval_rows:
            matched += 1
            assert float(r[f"prob_{first}"]) == pytest.approx(float(eval_rows[r["id"]][f"prob_{first}"]), abs=1e-2)
    assert matched == len(eval_rows)


def test_saliency_workflow_and_evaluate_option_write_maps(bundle, trained, tmp_path):
    import nibabel as nib

    tmp, _ = trained
    dims = 3 if bundle.name == "volume_classification" else 2
    size = tuple(TINY[bundle.name]["image_size"])
    wf = workflow(bundle, "saliency", tmp, output_dir=str(tmp_path / "sal"), log_dir=str(tmp_path / "runs"),
                  saliency_negatives=True, saliency_max_targets=1, saliency_max_images=3, saliency_split="val")
    wf.run()
    out = tmp_path / "sal" / "saliency"
    rows = list(csv.DictReader(open(out / "index.csv")))
    val = {it["id"]: it["image"] for it in wf.parser.get_parsed_content("data").splits["validation"]}
    assert len(rows) == 3 and {r["id"] for r in rows} <= set(val)  # negatives explained: one map per image
    assert {r["method"] for r in rows} == {"gradcam" if dims == 2 else "smoothgrad"}  # the bundle's default
    for r in rows:
        assert r["label"] in LABELS[bundle.name] and (out / r["png"]).exists()
        if dims == 2:
            assert r["map"].endswith(".npy") and np.load(out / r["map"]).shape == size
        else:
            img, src = nib.load(str(out / r["map"])), nib.load(val[r["id"]])  # tiny phantoms: size == image_size
            assert img.shape == src.shape == size and np.allclose(img.affine, src.affine, atol=1e-4)
    assert any((tmp_path / "runs" / "saliency").iterdir())  # TensorBoard images

    # evaluate: off by default, one flag switches the handler on ("false" from the command line stays off)
    wf = workflow(bundle, "evaluate", tmp, output_dir=str(tmp_path / "ev"), saliency="false")
    wf.run()
    assert not (tmp_path / "ev" / "saliency").exists()
    wf = workflow(bundle, "evaluate", tmp, output_dir=str(tmp_path / "ev2"), saliency=True,
                  saliency_method="gradcam++")
    wf.run()
    assert (tmp_path / "ev2" / "saliency" / "index.csv").exists() and (tmp_path / "ev2" / "metrics.json").exists()
    # the report (written after the saliency handler) shows the maps of this evaluation in its gallery
    assert "No saliency maps" in (tmp_path / "ev" / "report.html").read_text()
    page = (tmp_path / "ev2" / "report.html").read_text()
    pngs = sorted(p.relative_to(tmp_path / "ev2").as_posix() for p in (tmp_path / "ev2" / "saliency").rglob("*.png"))
    if pngs:
        assert "No saliency maps" not in page and f"<figcaption>{pngs[0]}</figcaption>" in page


def test_inference_takes_the_labels_of_the_model_file_and_refuses_others(bundle, trained, tmp_path):
    tmp, _ = trained
    state = torch.load(tmp / "models" / "model.pt", weights_only=True)
    meta = Classifier.decode_extra_state(state["_extra_state"])
    other = [f"x{i}" for i in range(len(meta["label_names"]))]
    state["_extra_state"] = {**meta, "label_names": other}
    torch.save(state, tmp_path / "other.pt")
    # the model file decides the labels: predictions.csv has the model's columns
    wf = workflow(bundle, "inference", tmp, model_path=str(tmp_path / "other.pt"), output_dir=str(tmp_path / "o"),
                  input=str(tmp / "data" / "images"))
    wf.run()
    assert list(csv.DictReader(open(tmp_path / "o" / "predictions.csv")))[0].keys() >= {f"prob_{n}" for n in other}
    # labels given on the command line that contradict it stop the run, naming both
    with pytest.raises(Exception) as err:
        workflow(bundle, "inference", tmp, model_path=str(tmp_path / "other.pt"), output_dir=str(tmp_path / "p"),
                 label_names=LABELS[bundle.name])
    assert f"setting label_names: {LABELS[bundle.name]!r} contradicts {other!r}" in error_chain(err.value)


def test_torchscript_export_matches_eager(bundle, trained, tmp_path):
    tmp, _ = trained
    copy = tmp_path / "bundle"
    (copy / "models").mkdir(parents=True)
    (copy / "configs").symlink_to(bundle / "configs")
    size = TINY[bundle.name]["image_size"]
    out = bt.export_torchscript(copy, ckpt_file=tmp / "models" / "model.pt", filepath=copy / "models" / "model.ts",
                                image_size=size, width=8)
    ts = torch.jit.load(str(out))
    net = workflow(bundle, "inference", tmp).parser.get_parsed_content("network_def")
    x = torch.randn(2, 1, *size)
    net.load_state_dict(torch.load(tmp / "models" / "model.pt", weights_only=True))
    net.eval()
    with torch.no_grad():
        assert torch.allclose(ts(x), net(x), atol=1e-5)
    stored = torch.load(tmp / "models" / "model.pt", weights_only=True)
    assert torch.allclose(ts.thresholds, stored["thresholds"])  # the operating points travel with the export
    assert torch.allclose(ts.temperature, stored["temperature"])


def test_resume_refuses_another_run_and_a_finished_one(bundle, trained):
    tmp, _ = trained
    before = torch.load(tmp / "models" / "last.pt", weights_only=True)
    assert before["finished"] is True and before["fingerprint"]["settings"]["max_epochs"] == 1
    with pytest.raises(Exception) as err:  # max_epochs is part of the run's identity
        workflow(bundle, "train", tmp, max_epochs=2).run()
    assert "last.pt belongs to another training run" in error_chain(err.value)
    assert "max_epochs: 1 in the saved run, 2 now" in error_chain(err.value)
    with pytest.raises(Exception) as err:  # the same run: finished, so nothing to resume (said, not silent)
        workflow(bundle, "train", tmp, max_epochs=1).run()
    assert "this training run already finished after 1 epoch(s)" in error_chain(err.value)
    after = torch.load(tmp / "models" / "last.pt", weights_only=True)
    assert after["trainer"] == before["trainer"]


def test_unknown_label_names_stop_before_training(bundle, tmp_path):
    wf = workflow(bundle, "train", tmp_path, label_names=[LABELS[bundle.name][0], "pneumonia"])
    with pytest.raises(Exception) as err:
        wf.run()
    chain = error_chain(err.value)
    assert "datalist.csv: label names ['pneumonia'] are not columns of the CSV" in chain
    assert not (tmp_path / "models").exists()  # stopped before any training


def test_truncated_image_stops_before_training_naming_the_file(bundle, tmp_path):
    from medclass.workflow import prepare_data

    prepare_data(None, tmp_path / "data", LABELS[bundle.name], phantoms=TINY[bundle.name]["phantoms"])
    victim = sorted((tmp_path / "data" / "images").glob("*" + SUFFIX[bundle.name]))[5]
    victim.write_bytes(victim.read_bytes()[:60])
    wf = workflow(bundle, "train", tmp_path, max_epochs=1)
    with pytest.raises(Exception) as err:
        wf.run()
    chain = error_chain(err.value)
    assert f"{victim}: cannot read image" in chain
    assert not (tmp_path / "models" / "last.pt").exists()


def test_skip_unreadable_trains_without_the_bad_image_and_lists_it(bundle, tmp_path):
    from medclass.workflow import prepare_data

    prepare_data(None, tmp_path / "data", LABELS[bundle.name], phantoms=TINY[bundle.name]["phantoms"])
    victim = sorted((tmp_path / "data" / "images").glob("*" + SUFFIX[bundle.name]))[5]
    victim.write_bytes(victim.read_bytes()[:60])
    wf = workflow(bundle, "train", tmp_path, max_epochs=1, skip_unreadable=True)
    wf.run()
    wf.finalize()
    skipped = list(csv.DictReader(open(tmp_path / "models" / "skipped.csv")))
    assert [r["file"] for r in skipped] == [str(victim)] and "cannot read image" in skipped[0]["reason"]
    assert torch.load(tmp_path / "models" / "last.pt", weights_only=True)["finished"] is True
    n = len(wf.parser.get_parsed_content("train#dataset")) + len(wf.parser.get_parsed_content("validate#dataset"))
    data = wf.parser.get_parsed_content("data")
    used = [it for k in ("training", "validation") for it in data.splits[k]]
    assert any(it["image"] == str(victim) for it in used)  # (the seeded split puts it there)
    assert n == len(used) - 1


def test_multi_process_training_with_gloo(bundle, tmp_path):
    """multi_gpu_train with 2 CPU processes (gloo): trains, the ranks end with identical weights, validation
    counts every sample once, rank 0 writes the checkpoints."""
    tiny = TINY[bundle.name]
    # test-only extra config: each rank dumps its weights and what its validation saw before the group ends
    probe = tmp_path / "probe.yaml"
    probe.write_text(
        "finalize:\n"
        "  - \"$torch.save({'state': @network.module.state_dict(), 'val_count': "
        "@key_metric#val_mean_auc.metric_fn.count, 'val_dataset': len(@validate#dataset), "
        "'val_rank_share': len(@validate#sampler), 'train_rank_share': len(@train#sampler), "
        "'aug_seed': @train#trainer.batch_transform.generator.initial_seed()}, "
        f"'{tmp_path}/rank' + str(torch.distributed.get_rank()) + '.pt')\"\n"
        "  - \"$medclass.workflow.finish_distributed()\"\n"
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
           "-m", "monai.bundle", "run", "--config_file",
           f"['configs/inference.yaml','configs/train.yaml','configs/multi_gpu_train.yaml','{probe}']",
           "--bundle_root", str(bundle), "--dataset_dir", str(tmp_path / "data"), "--ckpt_dir", str(tmp_path / "models"),
           "--log_dir", str(tmp_path / "runs"), "--max_epochs", "1", "--image_size", json.dumps(tiny["image_size"]),
           "--width", "8", "--batch_size", str(tiny["batch_size"]), "--phantoms", json.dumps(tiny["phantoms"]),
           "--progress_bar", "false", "--num_threads", "1"]
    res = subprocess.run(cmd, cwd=bundle, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    last = torch.load(tmp_path / "models" / "last.pt", weights_only=True)
    assert last["trainer"]["epoch"] == 1
    assert not any(k.startswith("module.") for k in last["network"])  # unwrapped from DDP
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for key, value in ranks[0]["state"].items():  # DDP keeps the replicas in step (BatchNorm statistics too)
        assert torch.equal(value, ranks[1]["state"][key]), key
    n_val = ranks[0]["val_dataset"]
    assert n_val > 2 and ranks[0]["val_rank_share"] + ranks[1]["val_rank_share"] == n_val  # split, not padded
    assert ranks[0]["val_count"] == ranks[1]["val_count"] == n_val  # gathered: every sample once
    assert ranks[0]["train_rank_share"] > 0 and ranks[0]["train_rank_share"] == ranks[1]["train_rank_share"]
    assert [r["aug_seed"] for r in ranks] == [0, 1]  # batch augmentation: seed + rank, different on each rank


def test_training_can_start_from_local_weights(bundle, trained, tmp_path):
    tmp, _ = trained
    ckpt = tmp / "models" / "model.pt"
    net = workflow(bundle, "train", tmp_path, pretrained=str(ckpt)).parser.get_parsed_content("network")
    state = torch.load(ckpt, weights_only=True)
    assert torch.equal(net.state_dict()["backbone.fc.weight"], state["backbone.fc.weight"])
    # a checkpoint for other labels: refused as is, accepted for the backbone with skip_head
    other = {k: v for k, v in state.items() if k != "_extra_state"}
    other["backbone.fc.weight"] = torch.zeros(2, state["backbone.fc.weight"].shape[1])
    other["backbone.fc.bias"] = torch.zeros(2)
    other["thresholds"] = torch.full((2,), 0.5)
    torch.save(other, tmp_path / "other.pt")
    with pytest.raises(Exception) as err:
        workflow(bundle, "train", tmp_path, pretrained=str(tmp_path / "other.pt")).parser.get_parsed_content("network")
    assert "other.pt" in error_chain(err.value)
    net = workflow(bundle, "train", tmp_path, pretrained=str(tmp_path / "other.pt"),
                   pretrained_skip_head=True).parser.get_parsed_content("network")
    assert torch.equal(net.state_dict()["backbone.layer1.0.conv1.weight"], state["backbone.layer1.0.conv1.weight"])


def test_volume_bundle_starts_from_an_inflated_2d_checkpoint(tmp_path):
    """--pretrained a 2D model --pretrained_inflate i3d: the 3D network starts from the 2D kernels."""
    from medclass.networks import build_classifier

    cxr, vol = ROOT / "cxr_classification", ROOT / "volume_classification"
    net2d = build_classifier("resnet18", 2, 1, 3, image_size=32, width=8, stem="medium",
                             label_names=LABELS[vol.name])
    torch.save(net2d.state_dict(), tmp_path / "model2d.pt")
    assert cxr.exists()
    wf = workflow(vol, "train", tmp_path, pretrained=str(tmp_path / "model2d.pt"), pretrained_inflate="i3d",
                  stem="medium")
    net3d = wf.parser.get_parsed_content("network")
    w2, w3 = net2d.state_dict()["backbone.layer1.0.conv1.weight"], net3d.state_dict()["backbone.layer1.0.conv1.weight"]
    assert w3.shape == (*w2.shape, 3)
    assert torch.allclose(w3.sum(-1), w2, atol=1e-6)  # i3d: repeated along depth, divided by its size
    with pytest.raises(Exception) as err:  # a 2D checkpoint without inflate is refused with a hint
        workflow(vol, "train", tmp_path, pretrained=str(tmp_path / "model2d.pt"),
                 stem="medium").parser.get_parsed_content("network")
    assert "inflate" in error_chain(err.value)


def test_volume_bundle_refuses_a_2d_image_naming_it(tmp_path):
    """A chest X-ray PNG given to the 3D bundle stops with an error naming the file, before any output."""
    from PIL import Image

    png = tmp_path / "cxr.png"
    Image.fromarray((torch.rand(64, 64) * 255).byte().numpy()).save(png)
    vol = ROOT / "volume_classification"
    net = workflow(vol, "inference", tmp_path).parser.get_parsed_content("network_def")
    torch.save(net.state_dict(), tmp_path / "model.pt")
    wf = workflow(vol, "inference", tmp_path, input=str(png), model_path=str(tmp_path / "model.pt"))
    with pytest.raises(Exception) as err:
        wf.run()
    assert "is a 2D image; expected" in error_chain(err.value) and str(png) in error_chain(err.value)
    assert not (tmp_path / "eval" / "predictions.csv").exists() or \
        (tmp_path / "eval" / "predictions.csv").read_text() == ""


def _tiny_npz(path: Path, dims: int, n_classes: int, size: int, seed: int = 0) -> Path:
    """A MedMNIST-format npz whose image brightness depends on the class (learnable in one epoch)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", 48), ("val", 24), ("test", 24)):
        y = np.arange(n) % n_classes
        images = rng.integers(0, 80, size=(n, *([size] * dims))) + (y * 150 // max(1, n_classes - 1))[
            (slice(None),) + (None,) * dims]
        arrays[f"{split}_images"] = images.clip(0, 255).astype(np.uint8)
        arrays[f"{split}_labels"] = y[:, None].astype(np.uint8)
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("n_classes", [3, 2], ids=["multiclass", "binary"])
def test_evaluate_multiclass_and_binary(bundle, n_classes, tmp_path):
    """A one-hot multi-class task and a single binary label, through train + evaluate in 2D and 3D."""
    dims = 3 if bundle.name == "volume_classification" else 2
    size = 16
    npz = _tiny_npz(tmp_path / "tiny.npz", dims, n_classes, size)
    names = [f"class_{i}" for i in range(n_classes)] if n_classes > 2 else ["class_1"]
    task = "multiclass" if n_classes > 2 else "multilabel"
    args = dict(datalist=str(npz), label_names=names, task=task, image_size=[size] * dims, preset="generic",
                preset_options={}, bootstrap_samples=50, subgroups=[])
    workflow(bundle, "train", tmp_path, max_epochs=1, **args).run()
    workflow(bundle, "evaluate", tmp_path, temperature_scaling=True, **args).run()
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["task"] == task and metrics["n"] == 24
    assert list(metrics["per_label"]) == names
    if task == "multiclass":
        cm = np.array(metrics["multiclass"]["confusion_matrix"])
        assert cm.shape == (3, 3) and cm.sum() == 24 and cm.sum(axis=1).tolist() == [8, 8, 8]
        assert metrics["thresholds"] == dict.fromkeys(names)  # arg-max decisions
        assert metrics["calibration"]["top_label"]["n"] == 24
        rows = list(csv.DictReader(open(tmp_path / "eval" / "predictions.csv")))
        for r in rows:  # one-hot arg-max decisions on probabilities that sum to 1
            probs = [float(r[f"prob_{n}"]) for n in names]
            assert sum(probs) == pytest.approx(1, abs=1e-4)
            assert [int(r[f"pred_{n}"]) for n in names] == [int(k == int(np.argmax(probs))) for k in range(3)]
    else:
        assert metrics["per_label"]["class_1"]["threshold"] is not None
    assert (tmp_path / "eval" / "report.html").exists()
    state = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert state["temperature"].item() > 0

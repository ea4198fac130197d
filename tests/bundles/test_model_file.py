"""The model file carries the model's settings (issue 24): a model trained with non-default image size, width,
labels and architecture is evaluated, run and explained with no model overrides; a contradicting override stops
naming both values; older model files still work or say what they lack; command-line values parse as typed."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import load_net_with_metadata

from medclass import bundle_tools as bt
from medclass.errors import SettingError
from medclass.exports import read_exported_metadata
from medclass.networks import Classifier, read_model_record
from medclass.networks.modelfile import model_settings, require
from medclass.run_cli import parse_overrides
from medclass.settings import check_command_line
from tests.conftest import error_chain

ROOT = Path(__file__).resolve().parents[2] / "bundles"
# what the model is: every value differs from the bundle's common.yaml
TRAINED = {
    "2d": ("cxr_classification", {"arch": "densenet121", "image_size": [48, 48], "width": 8,
                                  "label_names": ["effusion", "nodule"]}),
    "3d": ("volume_classification", {"arch": "resnet10", "image_size": [24, 24, 24], "width": 4,
                                     "label_names": ["cyst", "mass"]}),
}
DATA = {  # where the data is and how fast to run: not the model
    "cxr_classification": {"batch_size": 8, "phantoms": {"n": 40, "size": 64, "seed": 1}},
    "volume_classification": {"batch_size": 4, "phantoms": {"n": 36, "size": 32, "seed": 1, "spatial_dims": 3}},
}
SALIENCY = {"saliency_max_images": 2, "saliency_max_targets": 1, "saliency_negatives": True}


def workflow(bundle: Path, kind: str, tmp: Path, out: str, **overrides):
    """A bundle workflow with only the data, folders and speed given (no model settings unless in overrides)."""
    from monai.bundle import ConfigWorkflow

    args = {**DATA[bundle.name], "bundle_root": str(bundle), "dataset_dir": str(tmp / "data"),
            "ckpt_dir": str(tmp / "models"), "output_dir": str(tmp / out), "log_dir": str(tmp / "runs"),
            "bootstrap_samples": 20, **overrides}
    wf = ConfigWorkflow(config_file=bt.config_files(bundle, f"{kind}.yaml"),
                        meta_file=str(bundle / "configs" / "metadata.json"), logging_file=False,
                        workflow_type="train" if kind == "train" else "inference", **args)
    wf.initialize()
    return wf


@pytest.fixture(scope="module", params=sorted(TRAINED))
def trained(request, tmp_path_factory):
    name, model = TRAINED[request.param]
    bundle = ROOT / name
    tmp = tmp_path_factory.mktemp(request.param)
    wf = workflow(bundle, "train", tmp, "eval", max_epochs=1, progress_bar=False, **model)
    wf.run()
    wf.finalize()
    return bundle, tmp, model


def _rows(path: Path) -> list[dict]:
    return list(csv.DictReader(open(path)))


def test_training_records_the_model_in_its_file(trained):
    bundle, tmp, model = trained
    record = read_model_record(tmp / "models" / "model.pt")
    assert {k: record[k] for k in model} == model
    assert record["format"] == 2 and record["missing"] == []
    assert record["task"] == "multilabel" and record["preset"] == ("cxr" if "cxr" in bundle.name else "ct")
    assert record["spatial_dims"] == len(model["image_size"]) and record["in_channels"] == 1
    assert record["fingerprint"]["settings"]["image_size"] == model["image_size"]
    assert record["fingerprint"]["data"]["digest"]
    assert record["thresholds"] == [0.5, 0.5] and record["temperature"] == 1.0
    state = torch.load(tmp / "models" / "model.pt", weights_only=True)  # still a plain state_dict
    assert Classifier.decode_extra_state(state["_extra_state"])["arch"] == model["arch"]


def test_workflows_take_the_model_from_its_file(trained):
    """evaluate, inference and saliency with no model overrides write what runs repeating them write."""
    bundle, tmp, model = trained
    workflow(bundle, "evaluate", tmp, "eval").run()
    record = read_model_record(tmp / "models" / "model.pt")
    assert record["operating_points"]["split"] == "validation"  # how the thresholds were chosen
    workflow(bundle, "evaluate", tmp, "eval_repeated", **model).run()
    plain = (tmp / "eval" / "predictions.csv").read_text()
    assert plain == (tmp / "eval_repeated" / "predictions.csv").read_text()
    columns = list(_rows(tmp / "eval" / "predictions.csv")[0])
    assert [c for c in columns if c.startswith("prob_")] == [f"prob_{n}" for n in model["label_names"]]
    assert list(json.loads((tmp / "eval" / "metrics.json").read_text())["per_label"]) == model["label_names"]

    images = tmp / "data" / "images"
    workflow(bundle, "inference", tmp, "infer", input=str(images)).run()
    workflow(bundle, "inference", tmp, "infer_repeated", input=str(images), **model).run()
    assert (tmp / "infer" / "predictions.csv").read_text() == (tmp / "infer_repeated" / "predictions.csv").read_text()
    assert len(_rows(tmp / "infer" / "predictions.csv")) == len(list(images.iterdir()))

    fast = {"saliency_options": {"n_samples": 2}} if "volume" in bundle.name else {}  # 3D: SmoothGrad
    workflow(bundle, "saliency", tmp, "sal", **SALIENCY, **fast).run()
    workflow(bundle, "saliency", tmp, "sal_repeated", **SALIENCY, **fast, **model).run()
    index = _rows(tmp / "sal" / "saliency" / "index.csv")
    assert index == _rows(tmp / "sal_repeated" / "saliency" / "index.csv") and len(index) == 2
    for row in index:
        if row["map"].endswith(".npy"):
            a, b = (np.load(tmp / d / "saliency" / row["map"]) for d in ("sal", "sal_repeated"))
            assert a.shape == tuple(model["image_size"]) and np.array_equal(a, b)


@pytest.mark.parametrize("key", ["image_size", "width", "label_names", "arch"])
def test_a_contradicting_override_names_both_values(trained, key):
    bundle, tmp, model = trained
    other = {"image_size": [s * 2 for s in model["image_size"]], "width": 16, "label_names": ["mass", "nodule"],
             "arch": "resnet18"}[key]
    with pytest.raises(Exception) as err:
        workflow(bundle, "inference", tmp, "contradict", **{key: other})
    text = error_chain(err.value)
    assert f"SettingError: setting {key}: {other!r} contradicts {model[key]!r} recorded in the model file" in text
    # the same value, or one that resolves to it (width null = 64 for a width-64 model), is fine
    workflow(bundle, "inference", tmp, "same", **{key: model[key]})


def test_auto_on_a_later_workflow_means_the_model_files_value(trained):
    bundle, tmp, model = trained  # width auto: what the plan chose when the model was trained, i.e. the file's
    workflow(bundle, "inference", tmp, "auto_width", width="auto", input=str(tmp / "data" / "images")).run()
    workflow(bundle, "inference", tmp, "file_width", input=str(tmp / "data" / "images")).run()
    assert (tmp / "auto_width" / "predictions.csv").read_text() == (tmp / "file_width" / "predictions.csv").read_text()


def test_an_older_model_file_still_works_or_names_what_is_missing(trained, tmp_path, caplog):
    bundle, tmp, model = trained
    state = torch.load(tmp / "models" / "model.pt", weights_only=True)
    meta = Classifier.decode_extra_state(state["_extra_state"])
    for key in ("task", "preset", "preset_options", "arch_kwargs", "fingerprint", "dropout", "medclass_version"):
        meta.pop(key)
    meta["format"] = 1  # what medclass wrote before this issue
    (tmp_path / "models").mkdir()
    torch.save({**state, "_extra_state": meta}, tmp_path / "models" / "model.pt")
    record = read_model_record(tmp_path / "models" / "model.pt")
    assert record["missing"] == ["task", "preset", "preset_options"] and record["format"] == 1
    assert {k: record[k] for k in model} == model  # what it has is read
    with pytest.raises(SettingError, match="was written by an earlier medclass and does not record preset, task"):
        require(record, "arch", "preset", "task")
    bundle_values = {"task": "multilabel", "preset": "generic", "preset_options": {}, **model}
    settings = model_settings(tmp_path / "models" / "model.pt", bundle_values)
    assert settings["missing"] == ["task", "preset", "preset_options"] and settings["preset"] == "generic"
    assert "does not record task, preset, preset_options" in caplog.text

    # the workflow runs: the recorded settings from the file, the missing ones from the bundle or the command line
    for d in ("data",):
        (tmp_path / d).symlink_to(tmp / d)
    images = tmp / "data" / "images"
    wf = workflow(bundle, "inference", tmp_path, "infer", input=str(images), preset="generic",
                  preset_options={})
    wf.run()
    assert wf.parser.get_parsed_content("preset") == "generic"
    assert wf.parser.get_parsed_content("image_size") == model["image_size"]
    assert len(_rows(tmp_path / "infer" / "predictions.csv")) == len(list(images.iterdir()))

    # no metadata at all (a bare state dict): every setting is missing and named
    bare = {k: v for k, v in state.items() if k != "_extra_state"}
    torch.save(bare, tmp_path / "bare.pt")
    record = read_model_record(tmp_path / "bare.pt")
    assert record["format"] == 0 and record["num_classes"] == 2 and "image_size" in record["missing"]
    with pytest.raises(SettingError, match="does not record arch, image_size"):
        require(record, "arch", "image_size")


def test_command_line_values_parse_as_typed(tmp_path):
    assert parse_overrides(["--width", "None", "--hidden_size", "null", "--image_size", "[224,224]",
                            "--label_names", "[a, b]", "--resume", "false", "--learning_rate", "1e-3"]) == {
        "width": None, "hidden_size": None, "image_size": [224, 224], "label_names": ["a", "b"],
        "resume": False, "learning_rate": 0.001}
    # python -m monai.bundle run drops None-valued arguments: a dropped --width None stops instead of being ignored
    argv = ["/x/monai/bundle/__main__.py", "run", "--config_file", "c.yaml", "--width", "None"]
    with pytest.raises(SettingError, match="write --width null"):
        check_command_line({"width": 32}, argv)
    check_command_line({"width": None}, argv)  # nothing lost
    check_command_line({"width": 32}, ["/x/medclass/run_cli.py", "--width", "None"])

    # "null" as monai.bundle run passes it: a ViT with its settings named in the bundle, width null
    bundle = ROOT / "cxr_classification"
    wf = workflow(bundle, "inference", tmp_path, "o", arch="vit", width="null", image_size=[32, 32],
                  hidden_size=32, num_heads=2, num_layers=1, patch_size="auto")
    net = wf.parser.get_parsed_content("network_def")
    assert net.describe()["arch_kwargs"] == {"hidden_size": 32, "mlp_dim": 128, "num_layers": 1, "num_heads": 2}
    assert net.patch_size == (4, 4) and net.width is None  # patch size derived from the image size
    with pytest.raises(Exception) as err:  # a ViT setting for a CNN is refused
        workflow(bundle, "inference", tmp_path, "o", hidden_size=32).parser.get_parsed_content("network_def")
    assert "hidden_size applies to arch='vit' only" in error_chain(err.value)


def test_metadata_and_export_tell_what_the_network_returns(trained, tmp_path):
    """metadata.json: the network returns logits; the TorchScript export (made from the model file alone) returns
    the same logits, carries metadata describing this model, and the workflows' probabilities are their sigmoid."""
    bundle, tmp, model = trained
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["format"] == "logits"
    assert "logit" in meta["pred_classes"]
    bt.verify_metadata(bundle)
    out = bt.export_torchscript(bundle, ckpt_file=tmp / "models" / "model.pt", filepath=tmp_path / "model.ts")
    extra = {"metadata.json": ""}
    ts = torch.jit.load(str(out), _extra_files=extra)
    pred = json.loads(extra["metadata.json"])["network_data_format"]["outputs"]["pred"]
    assert list(pred["channel_def"].values()) == model["label_names"] and pred["format"] == "logits"
    assert json.loads(extra["metadata.json"])["network_data_format"]["inputs"]["image"]["spatial_shape"] == \
        model["image_size"]
    # one TorchScript export: MONAI reads it as a Zoo export (metadata + the inference config), medclass as its own
    _, zoo_meta, configs = load_net_with_metadata(str(out), more_extra_files=("inference.json",))
    assert zoo_meta["network_data_format"]["outputs"]["pred"]["format"] == "logits"
    assert "network_def" in json.loads(configs["inference.json"])
    assert read_exported_metadata(out)["label_names"] == model["label_names"]
    wf = workflow(bundle, "inference", tmp, "o")
    net = wf.parser.get_parsed_content("network")
    net.load_state_dict(torch.load(tmp / "models" / "model.pt", weights_only=True))
    net.eval()
    x = torch.randn(2, 1, *model["image_size"])
    with torch.no_grad():
        logits = net(x)
        assert torch.allclose(ts(x), logits, atol=1e-5)
        post = wf.parser.get_parsed_content("postprocessing")
        probs = torch.stack([post({"pred": p})["pred"] for p in logits])
    assert torch.allclose(probs, torch.sigmoid(logits / net.temperature), atol=1e-6)
    with pytest.raises(SettingError, match="setting width: 16 contradicts"):  # the export checks overrides too
        bt.export_torchscript(bundle, ckpt_file=tmp / "models" / "model.pt", filepath=tmp_path / "x.ts", width=16)


def test_monai_label_app_serves_the_model_file_with_no_overrides(trained, tmp_path):
    """The MONAI Label app builds its pieces from the bundle configs: the model file's settings, no overrides."""
    from medclass.label.bundle import BundleModel

    bundle, tmp, model = trained
    served_dir = tmp_path / bundle.name  # a bundle folder whose models/model.pt is the trained model
    shutil.copytree(bundle / "configs", served_dir / "configs")
    (served_dir / "models").mkdir()
    shutil.copy(tmp / "models" / "model.pt", served_dir / "models" / "model.pt")
    app = BundleModel(served_dir, overrides={"num_threads": 1})
    assert app.label_names == model["label_names"] and app.image_size == model["image_size"]
    image = sorted((tmp / "data" / "images").iterdir())[0]
    result, _ = app.predict(image)
    workflow(bundle, "inference", tmp, "one", input=str(image)).run()
    row = _rows(tmp / "one" / "predictions.csv")[0]
    assert [lab["name"] for lab in result["labels"]] == model["label_names"]
    for lab in result["labels"]:
        assert lab["probability"] == pytest.approx(float(row[f"prob_{lab['name']}"]), abs=1e-5)
        assert lab["prediction"] == int(row[f"pred_{lab['name']}"])

"""Every bundle carries the shared workflow configs unchanged, its own values only in common.yaml (copied to the
top of inference.yaml, the complete base every workflow layers over), and each engine, network, inferer,
post-processing chain and data pipeline is defined once."""

import shutil
from pathlib import Path

import pytest
import yaml

from medclass import bundle_tools as bt
from medclass.bundle_tools import GENERATED, render_configs, sync_bundle
from medclass.vocab import MODEL_SETTINGS
from tests.conftest import error_chain

BUNDLES = sorted(p.parent.parent for p in (Path(__file__).resolve().parents[2] / "bundles").glob("*/configs/common.yaml"))
SOURCES = {name: yaml.safe_load((bt.CONFIG_SOURCE / name).read_text()) for name in GENERATED.values()}
# defined in inference.yaml only: no later layer redefines them, nor patches the network (`network_def#...`)
DEFINED_ONCE = ("network_def", "preprocessing", "postprocessing", "inferer", "evaluator", "dataloader", "data",
                "data_args", "checkpoint_loader", "prediction_writer")
ENGINE_TARGETS = ("medclass.engines.Evaluator", "medclass.engines.Trainer")


def _targets(config, path=""):
    """(id, _target_) of every component in a config."""
    if isinstance(config, dict):
        if "_target_" in config:
            yield path, config["_target_"]
        for k, v in config.items():
            yield from _targets(v, f"{path}#{k}" if path else str(k))
    elif isinstance(config, list):
        for i, v in enumerate(config):
            yield from _targets(v, f"{path}#{i}")


def test_there_are_bundles():
    assert any(b.name == "cxr_classification" for b in BUNDLES)


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda b: b.name)
def test_generated_configs_are_in_sync(bundle):
    assert sync_bundle(bundle, check=True) == [], "run: medclass sync-bundles bundles/*"


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda b: b.name)
def test_workflows_do_not_shadow_bundle_values(bundle):
    values = set(yaml.safe_load((bundle / "configs" / "common.yaml").read_text()))
    for name, config in SOURCES.items():
        keys = {k.split("#")[0].split("::")[0] for k in config}
        assert not (keys & values), f"{name} redefines {sorted(keys & values)} set in {bundle.name}/configs/common.yaml"


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda b: b.name)
def test_inference_config_starts_with_the_bundle_values(bundle):
    """inference.yaml runs alone (the Model Zoo's way): it holds every value of common.yaml, unchanged."""
    common = yaml.safe_load((bundle / "configs" / "common.yaml").read_text())
    inference = yaml.safe_load((bundle / "configs" / "inference.yaml").read_text())
    # the model-defining values are a new model's (new_model); each top-level one resolves from the model file
    # where it exists, else from new_model, and a command-line value replaces it (checked against the file)
    model = {k: v for k, v in common.items() if k in MODEL_SETTINGS}
    assert inference[bt.NEW_MODEL] == model and set(model) == set(MODEL_SETTINGS)
    assert {k: inference[k] for k in common if k not in model} == {k: v for k, v in common.items() if k not in model}
    assert all(inference[k] == f"$@model['{k}']" for k in model)
    for key in ("bundle_root", "device", "network_def", "inferer", "output_dir", "dataset_dir", "evaluator"):
        assert key in inference, key  # the Model Zoo's and MONAI's inference IDs


def test_each_engine_network_and_pipeline_is_defined_once():
    for key in DEFINED_ONCE:
        where = [n for n, c in SOURCES.items() if key in c]
        assert where == ["inference.yaml"], f"{key} defined in {where}"
    assert not [k for c in SOURCES.values() for k in c if k.startswith("network_def#")]
    engines = [(n, i) for n, c in SOURCES.items() for i, t in _targets(c) if t in ENGINE_TARGETS]
    assert sorted(engines) == [("evaluate.yaml", "calibrator"), ("inference.yaml", "evaluator"),
                               ("train.yaml", "train#trainer")]
    # training validates with inference.yaml's evaluator; the other workflows set its items and handlers
    assert SOURCES["train.yaml"]["validate"]["evaluator"] == "@evaluator"


def test_workflow_yaml_is_at_most_half_of_what_it_was():
    """986 generated lines per bundle before the configs were layered (issue 23), 493 after; issue 21 added 4 for the
    self-configured recipe (medclass.plan imported, the plan item in inference.yaml and train.yaml, plan.json
    written) and 2 for `tta` and `mc_dropout` (two named top-level keys a user sets); the TensorBoard handlers of
    train.yaml took 4 fewer lines in flow style."""
    for bundle in BUNDLES:
        lines = sum(len(text.splitlines()) for text in render_configs(bundle).values())
        assert lines <= 495, f"{bundle.name}: {lines} lines of workflow YAML"


def test_sync_repairs_an_edited_copy(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "common.yaml").write_text("label_names: [a]   # a comment\n")
    assert sorted(sync_bundle(tmp_path)) == sorted(GENERATED)
    assert "label_names: [a]\n" in (tmp_path / "configs" / "inference.yaml").read_text()
    (tmp_path / "configs" / "train.yaml").write_text("# hand edit\n")
    assert sync_bundle(tmp_path, check=True) == ["train.yaml"]
    assert sync_bundle(tmp_path) == ["train.yaml"] and sync_bundle(tmp_path, check=True) == []
    (tmp_path / "configs" / "common.yaml").write_text("label_names: [a, b]\n")  # a value changed: its copy is stale
    assert sync_bundle(tmp_path, check=True) == ["inference.yaml"]


def test_a_run_stops_when_common_yaml_changed_after_the_copy(tmp_path):
    from monai.bundle import ConfigWorkflow

    bundle = BUNDLES[0]
    shutil.copytree(bundle / "configs", tmp_path / "configs")
    common = tmp_path / "configs" / "common.yaml"
    common.write_text(common.read_text().replace("bootstrap_seed: ", "bootstrap_seed: 1") + "\n")

    def initialize():
        ConfigWorkflow(config_file=bt.config_files(tmp_path, "train.yaml"), workflow_type="train",
                       meta_file=str(tmp_path / "configs" / "metadata.json"), logging_file=False,
                       bundle_root=str(tmp_path)).initialize()

    with pytest.raises(Exception) as err:
        initialize()
    assert f"SettingError: {common} changed after its values were copied" in error_chain(err.value)
    assert f"run `medclass sync-bundles {tmp_path}`" in error_chain(err.value)
    assert sync_bundle(tmp_path) == ["inference.yaml"]
    initialize()
    values = yaml.safe_load((tmp_path / "configs" / "inference.yaml").read_text())
    assert values["bootstrap_seed"] == int("1" + str(yaml.safe_load((bundle / "configs" / "common.yaml").read_text())
                                                      ["bootstrap_seed"]))


def test_model_values_move_under_new_model_in_any_yaml_style():
    """common.yaml as yaml.safe_dump writes it (block lists not indented, block mappings) keeps its values."""
    values = {"bundle_root": ".", "label_names": ["a", "b"], "image_size": [8, 8], "phantoms": {"n": 4},
              "preset_options": {"window": [40, 400]}, "max_epochs": 1}
    out = yaml.safe_load(bt.split_model_values(yaml.safe_dump(values, sort_keys=False)))
    assert out["new_model"] == {"label_names": ["a", "b"], "image_size": [8, 8], "preset_options": {"window": [40, 400]}}
    assert out["phantoms"] == {"n": 4} and out["max_epochs"] == 1 and out["image_size"] == "$@model['image_size']"


def test_values_keep_their_meaning_without_comments(tmp_path):
    common = tmp_path / "common.yaml"
    common.write_text("a: 'x # not a comment'  # a comment\nb: [1, 2]  # list\n# full line\n\nc: \"#\"\n")
    assert bt.values_text(common) == "a: 'x # not a comment'\nb: [1, 2]\nc: \"#\"\n"
    common.write_text("[1, 2]\n")
    with pytest.raises(ValueError, match="YAML mapping"):
        bt.values_text(common)

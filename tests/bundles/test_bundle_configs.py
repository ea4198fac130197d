"""Every bundle carries the shared workflow configs unchanged, and its own values only in common.yaml."""

from pathlib import Path

import pytest
import yaml

from medclass.bundle_tools import GENERATED, render_configs, sync_bundle

BUNDLES = sorted(p.parent.parent for p in (Path(__file__).resolve().parents[2] / "bundles").glob("*/configs/common.yaml"))


def test_there_are_bundles():
    assert any(b.name == "cxr_classification" for b in BUNDLES)


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda b: b.name)
def test_generated_configs_are_in_sync(bundle):
    assert sync_bundle(bundle, check=True) == [], "run: medclass sync-bundles bundles/*"


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda b: b.name)
def test_workflows_do_not_shadow_bundle_values(bundle):
    values = set(yaml.safe_load((bundle / "configs" / "common.yaml").read_text()))
    for name, text in render_configs().items():
        keys = {k.split("#")[0].split("::")[0] for k in yaml.safe_load(text)} if name != "multi_gpu_train.yaml" else set()
        assert not (keys & values), f"{name} redefines {sorted(keys & values)} set in {bundle.name}/configs/common.yaml"


def test_sync_repairs_an_edited_copy(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "common.yaml").write_text("label_names: [a]\n")
    assert sorted(sync_bundle(tmp_path)) == sorted(GENERATED)
    (tmp_path / "configs" / "train.yaml").write_text("# hand edit\n")
    assert sync_bundle(tmp_path, check=True) == ["train.yaml"]
    assert sync_bundle(tmp_path) == ["train.yaml"] and sync_bundle(tmp_path, check=True) == []

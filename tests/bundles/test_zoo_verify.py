"""The Model Zoo's own checks on both bundles with a trained (tiny) model.

``ci/verify_bundle.py`` of Project-MONAI/model-zoo, full mode, re-done step by step: the files (``large_files.yml``
downloaded with its hash, the necessary and the preferred files), version and changelog, the metadata schema, the
properties of ``configs/inference.yaml`` alone, the network's input/output shapes (``verify_net_in_out``) and the
TorchScript export (``ckpt_export``), each called as that script calls MONAI: with ``configs/inference.yaml`` alone
and from a working directory outside the bundle (the zoo's root). The released bundle is made with the commands a
user runs: tiny values in ``common.yaml`` + ``medclass sync-bundles``, training with ``python -m monai.bundle run``,
``medclass verify-bundle`` (which exports ``models/model.ts``) and ``medclass large-files``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from medclass.bundle_tools import SCHEMA_PATH

ROOT = Path(__file__).resolve().parents[2]
TINY = {
    "cxr_classification": {"image_size": [64, 64], "width": 8, "batch_size": 8, "max_epochs": 1, "num_threads": 1,
                           "phantoms": {"n": 40, "size": 64, "seed": 1}},
    "volume_classification": {"image_size": [32, 32, 32], "width": 8, "batch_size": 4, "max_epochs": 1,
                              "num_threads": 1, "phantoms": {"n": 36, "size": 32, "seed": 1, "spatial_dims": 3}},
}
INFERENCE = os.path.join("configs", "inference.yaml")  # the zoo's config_file for every check after the files


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env=_env())
    assert res.returncode == 0, " ".join(cmd) + "\n" + (res.stdout[-2000:] + res.stderr[-3000:])
    return res


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module", params=sorted(TINY))
def zoo(request, tmp_path_factory) -> tuple[Path, Path]:
    """``(zoo_root, bundle)``: a released copy of the bundle in ``zoo_root/models/<name>`` with a tiny trained model,
    its TorchScript export and a ``large_files.yml`` pointing at the published files (``zoo_root/release``)."""
    name = request.param
    root = tmp_path_factory.mktemp("zoo")
    bundle = root / "models" / name
    shutil.copytree(ROOT / "bundles" / name, bundle,
                    ignore=shutil.ignore_patterns("models", "data", "eval", "runs", "inference", "cache", "logs"))
    common = bundle / "configs" / "common.yaml"
    values = yaml.safe_load(common.read_text())
    values.update(TINY[name])
    common.write_text(yaml.safe_dump(values, sort_keys=False))
    meta_file = bundle / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["network_data_format"]["inputs"]["image"]["spatial_shape"] = TINY[name]["image_size"]
    meta_file.write_text(json.dumps(meta, indent=4))

    _run([sys.executable, "-m", "medclass.cli", "sync-bundles", "."], cwd=bundle)
    _run([sys.executable, "-m", "monai.bundle", "run", "--config_file",
          "['configs/inference.yaml','configs/train.yaml']", "--progress_bar", "false"], cwd=bundle)
    res = _run([sys.executable, "-m", "medclass.cli", "verify-bundle", "."], cwd=bundle)
    assert "configs: in sync" in res.stdout and "TorchScript export: ok" in res.stdout, res.stdout
    release = root / "release"
    release.mkdir()
    for f in ("model.pt", "model.ts"):
        shutil.copy(bundle / "models" / f, release / f)
    _run([sys.executable, "-m", "medclass.cli", "large-files", ".", "--url", (release / "model.pt").as_uri(),
          "--ts-url", (release / "model.ts").as_uri()], cwd=bundle)
    return root, bundle


@pytest.fixture
def at_zoo_root(zoo, monkeypatch) -> Path:
    """The zoo's CI runs from its repository root, not from the bundle: configs must not depend on the cwd."""
    root, bundle = zoo
    monkeypatch.chdir(root)
    return bundle


def test_files_and_large_files(at_zoo_root):
    """verify_bundle_directory: large files downloaded (hash checked) first, then the necessary and preferred files."""
    from monai.apps.utils import download_url
    from monai.bundle import ConfigParser

    bundle = at_zoo_root
    names = [f for f in os.listdir(bundle) if f.split(".")[0] == "large_files"]
    assert names == ["large_files.yml"]
    parser = ConfigParser()
    parser.read_config(str(bundle / names[0]))
    entries = parser.get()["large_files"]
    assert [e["path"] for e in entries] == ["models/model.pt", "models/model.ts"]
    assert all(e["hash_type"] == "sha256" and e["hash_val"] == _sha256(bundle / e["path"]) for e in entries)
    before = _sha256(bundle / "models" / "model.pt")
    (bundle / "models" / "model.pt").unlink()  # as the zoo's CI finds a bundle: the weights are only linked
    for e in entries:  # the zoo's download_large_files
        e = {**e, "fuzzy": True, "filepath": str(bundle / e["path"])}
        e.pop("path")
        download_url(**e)
    assert _sha256(bundle / "models" / "model.pt") == before
    for f in ("configs/metadata.json", "LICENSE", "models/model.pt"):
        assert (bundle / f).is_file(), f
    assert [f for f in os.listdir(bundle / "configs") if f.split(".")[0] == "inference"] == ["inference.yaml"]


def test_version_and_changelog(at_zoo_root):
    meta = json.loads((at_zoo_root / "configs" / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"]


def test_metadata_format(at_zoo_root):
    """verify_metadata_format, with the schema the metadata names (the zoo downloads it to eval/schema.json; the
    repository keeps a copy written from MONAI's bundle specification)."""
    from monai.bundle import verify_metadata

    bundle = at_zoo_root
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert "required_packages_version" in meta and meta["schema"].endswith("/meta_schema_20240725.json")
    (bundle / "eval").mkdir(exist_ok=True)
    shutil.copy(SCHEMA_PATH, bundle / "eval" / "schema.json")
    verify_metadata(meta_file=os.path.join(bundle, "configs/metadata.json"),
                    filepath=os.path.join(bundle, "eval/schema.json"))


def test_inference_config_properties(at_zoo_root):
    """verify_bundle_properties: configs/inference.yaml alone holds MONAI's inference and metadata properties (the
    zoo checks them only for bundles that declare supported_apps; here always)."""
    from monai.bundle import create_workflow

    bundle = str(at_zoo_root)
    wf = create_workflow(workflow_type="inference", bundle_root=bundle, config_file=os.path.join(bundle, INFERENCE),
                         logging_file=os.path.join(bundle, "configs/logging.conf"),
                         meta_file=os.path.join(bundle, "configs/metadata.json"))
    assert wf.check_properties() == []
    for key in ("bundle_root", "device", "network_def", "inferer", "output_dir"):  # the zoo's CONTRIBUTING
        assert key in wf.parser, key


def test_data_shape(at_zoo_root):
    from monai.bundle import verify_net_in_out

    bundle = str(at_zoo_root)
    verify_net_in_out(net_id="network_def", meta_file=os.path.join(bundle, "configs/metadata.json"),
                      config_file=os.path.join(bundle, INFERENCE), bundle_root=bundle)


def test_torchscript(at_zoo_root):
    from monai.bundle import ckpt_export

    bundle = str(at_zoo_root)
    ckpt_export(net_id="network_def", filepath=os.path.join(bundle, "models/verify_model.ts"),
                ckpt_file=os.path.join(bundle, "models", "model.pt"),
                meta_file=os.path.join(bundle, "configs/metadata.json"),
                config_file=os.path.join(bundle, INFERENCE), bundle_root=bundle)
    released = torch.jit.load(os.path.join(bundle, "models", "model.ts"))
    exported = torch.jit.load(os.path.join(bundle, "models", "verify_model.ts"))
    x = torch.randn(2, 1, *yaml.safe_load(Path(bundle, "configs", "common.yaml").read_text())["image_size"])
    with torch.no_grad():
        assert torch.allclose(released(x), exported(x), atol=1e-5)


def test_inference_runs_alone_as_the_readme_says(zoo):
    """``python -m monai.bundle run --config_file configs/inference.yaml --input ...`` in the bundle folder."""
    _, bundle = zoo
    images = bundle / "data" / "phantoms" / "images"
    _run([sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.yaml", "--input",
          str(images)], cwd=bundle)
    rows = list(csv.DictReader(open(bundle / "inference" / "predictions.csv")))
    labels = yaml.safe_load((bundle / "configs" / "common.yaml").read_text())["label_names"]
    assert len(rows) == len([p for p in images.iterdir() if not p.name.startswith(".")])
    assert list(rows[0]) == ["id", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"] + [
        f"{k}_{n}" for k in ("prob", "threshold", "pred") for n in labels]

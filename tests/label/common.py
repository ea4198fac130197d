"""Constants and helpers of the MONAI Label tests (fixtures in conftest.py)."""

from __future__ import annotations

import csv
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from medclass.bundle_tools import sync_bundle

ROOT = Path(__file__).resolve().parents[2]
TINY = {
    "cxr_classification": {"image_size": [64, 64], "width": 8, "batch_size": 8, "num_threads": 2,
                           "phantoms": {"n": 40, "size": 64, "seed": 1}},
    "volume_classification": {"image_size": [32, 32, 32], "width": 8, "batch_size": 4, "num_threads": 2,
                              "phantoms": {"n": 36, "size": 32, "seed": 1, "spatial_dims": 3}},
}
CXR_THRESHOLDS = [0.3, 0.45, 0.55, 0.7]  # stored in the model: the decisions must use them, not 0.5
CXR_DICOM = "dicom/chest_xray/NIH_CXR14_1.3.6.1.4.1.11129.5.5.110503645592756492463169821050252582267888.dcm"
VOLUME = "nifti/IXI_T1_ds_n10/IXI012-HH-1211-T1_ds.nii.gz"


def tiny_bundle(name: str, dst: Path) -> Path:
    """A copy of a bundle's configs with tiny values in its common.yaml (copied into its inference.yaml)."""
    shutil.copytree(ROOT / "bundles" / name / "configs", dst / "configs")
    common = dst / "configs" / "common.yaml"
    values = yaml.safe_load(common.read_text())
    values.update(TINY[name])
    common.write_text(yaml.safe_dump(values, sort_keys=False))
    sync_bundle(dst)
    return dst


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def bundle_cli_inference(bundle: Path, image: Path, out: Path) -> dict[str, str]:
    """The bundle's inference workflow from the command line, as the README shows it; its predictions.csv row."""
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file",
           "configs/inference.yaml", "--bundle_root", str(bundle),
           "--output_dir", str(out), "--input", str(image)]
    res = subprocess.run(cmd, cwd=bundle, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert len(rows) == 1
    return rows[0]

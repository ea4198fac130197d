"""Fixtures of the MONAI Label tests: tiny bundle copies with models, and one real server for the package.

The server (``monailabel start_server`` on 127.0.0.1) serves temporary copies of both bundles (tiny settings)
with models made here: the chest X-ray one trained one epoch through the bundle's train workflow
(:meth:`BundleModel.train`), the volume one a freshly built classifier. Its datastore holds a real chest X-ray
DICOM and a real IXI T1 NIfTI volume. It runs with 2 inference workers, a queue of 4 and an 8 MB upload limit, and
allows label files from one extra folder (``allowed``), so that the limits can be tested.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from medclass.label.bundle import BundleModel
from tests.conftest import need
from tests.label.common import CXR_DICOM, CXR_THRESHOLDS, TINY, VOLUME, tiny_bundle

SERVER_CONF = {"infer_workers": "2", "infer_queue": "4", "max_upload_mb": "8"}


@pytest.fixture(scope="package")
def bundles(tmp_path_factory) -> dict[str, Path]:
    """Tiny copies of both bundles with models: cxr trained 1 epoch on phantoms, volume freshly built."""
    from medclass.workflow import prepare_data

    tmp = tmp_path_factory.mktemp("label_bundles")
    cxr = tiny_bundle("cxr_classification", tmp / "cxr_classification")
    model = BundleModel(cxr)
    prepare_data(None, tmp / "phantoms2d", model.label_names, phantoms=TINY["cxr_classification"]["phantoms"])
    summary = model.train(tmp / "phantoms2d" / "datalist.csv", max_epochs=1)
    assert summary["epochs"] == 1 and (cxr / "models" / "model.pt").is_file()
    assert not list((cxr / "models").glob(".train-*"))  # the work folder is gone
    assert json.loads((cxr / "models" / "plan.json").read_text())["settings"]["max_epochs"] == 1  # its recipe, beside it
    state = torch.load(cxr / "models" / "model.pt", weights_only=True)
    state["thresholds"] = torch.tensor(CXR_THRESHOLDS)
    torch.save(state, cxr / "models" / "model.pt")

    vol = tiny_bundle("volume_classification", tmp / "volume_classification")
    wf = BundleModel(vol)._workflow(BundleModel(vol).inference_files, "inference", input=str(tmp))
    net = wf.parser.get_parsed_content("network_def")
    (vol / "models").mkdir()
    torch.save(net.state_dict(), vol / "models" / "model.pt")
    return {"cxr_classification": cxr, "volume_classification": vol, "phantoms2d": tmp / "phantoms2d"}


@pytest.fixture(scope="package")
def server(bundles, real_data, tmp_path_factory):
    pytest.importorskip("monailabel", reason="MONAI Label is not installed (bash scripts/install_label.sh)")
    from medclass.cli import main as medclass_cli
    from medclass.label.launch import start_server, stop_server, wait_until_ready

    tmp = tmp_path_factory.mktemp("label_server")
    studies = tmp / "studies"
    studies.mkdir()
    shutil.copy(need(real_data, CXR_DICOM), studies / "chest.dcm")
    shutil.copy(need(real_data, VOLUME), studies / "head.nii.gz")
    # files outside the datastore a client must not reach, and a symlink from the studies folder to one of them
    outside, allowed = tmp / "outside", tmp / "allowed"
    outside.mkdir()
    allowed.mkdir()
    shutil.copy(studies / "chest.dcm", outside / "secret.dcm")
    (studies / "link.dcm").symlink_to(outside / "secret.dcm")
    assert medclass_cli(["label-app", str(tmp / "app")]) == 0
    log = tmp / "server.log"
    conf = {**SERVER_CONF, "datalist_dirs": str(allowed)}
    proc, url = start_server(tmp / "app", studies, [bundles["cxr_classification"], bundles["volume_classification"]],
                             log_file=log, extra_conf=conf)
    try:
        wait_until_ready(url, proc, timeout=180, log_file=str(log))
        yield {"url": url, "proc": proc, "studies": studies, "log": log, "tmp": tmp, "outside": outside,
               "allowed": allowed, **bundles}
    finally:
        stop_server(proc)
        assert proc.poll() is not None



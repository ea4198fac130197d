"""predictions.csv on real DICOMs (issue 24): per label probability, threshold and decision; the Study, Series and SOP
Instance UIDs of each DICOM input, so results join back to PACS; and no patient name or ID in any file written."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pydicom
import pytest
import torch

from medclass import bundle_tools as bt
from medclass.handlers.predictions import UID_COLUMNS
from medclass.networks import build_classifier
from medclass.transforms import read_image
from tests.conftest import need

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "cxr_classification"
XRAYS = ("NIH_CXR14_1.3.6.1.4.1.11129.5.5.110503645592756492463169821050252582267888.dcm", "RG1_J2KI.dcm",
         "CR-MONO1-10-chest.dcm")
LABELS = ["a", "b"]
THRESHOLDS = [0.3, 0.7]


def _patient_strings(files) -> set[str]:
    """Every non-empty PatientName / PatientID value (and each name component) of the files."""
    out = set()
    for f in files:
        ds = pydicom.dcmread(f, force=True, stop_before_pixels=True)
        for keyword in ("PatientName", "PatientID", "OtherPatientIDs"):
            value = str(ds.get(keyword, "") or "").strip()
            if value:
                out.add(value)
                out.update(p for p in value.split("^") if len(p) >= 4)
    return out


def _run_inference(tmp_path: Path, inputs: Path) -> Path:
    from monai.bundle import ConfigWorkflow

    models = tmp_path / "models"
    models.mkdir()
    torch.manual_seed(0)
    net = build_classifier("resnet18", spatial_dims=2, in_channels=1, num_classes=2, image_size=(64, 64), width=8,
                           label_names=LABELS, thresholds=THRESHOLDS)
    torch.save(net.state_dict(), models / "model.pt")
    out = tmp_path / "out"
    wf = ConfigWorkflow(config_file=bt.config_files(BUNDLE, "inference.yaml"),
                        meta_file=str(BUNDLE / "configs" / "metadata.json"), workflow_type="inference",
                        bundle_root=str(BUNDLE), ckpt_dir=str(models), output_dir=str(out),
                        log_dir=str(tmp_path / "runs"), dataset_dir=str(tmp_path / "data"), input=str(inputs),
                        image_size=[64, 64], width=8, arch="resnet18", label_names=LABELS, batch_size=2)
    wf.initialize()
    wf.run()
    wf.finalize()
    return out


def test_predictions_csv_carries_decisions_and_dicom_uids_but_no_patient_identifiers(real_data, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    files = [shutil.copy(need(real_data, f"dicom/chest_xray/{name}"), inputs / name) for name in XRAYS]
    secrets = _patient_strings(files)
    assert {"Covid0000", "9RG1", "CompressedSamples^RG1"} <= secrets  # the real files do name patients

    out = _run_inference(tmp_path, inputs)
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert len(rows) == len(XRAYS)
    header = list(rows[0])
    assert header[:4] == ["id", *UID_COLUMNS]
    for n in LABELS:
        assert {f"prob_{n}", f"threshold_{n}", f"pred_{n}"} <= set(header)
    by_id = {r["id"]: r for r in rows}
    for f in map(Path, files):
        ds = pydicom.dcmread(f, force=True, stop_before_pixels=True)
        r = by_id[f.stem]
        # the three UIDs of the file itself, so the row joins back to the PACS study / series / image
        assert r["StudyInstanceUID"] == ds.StudyInstanceUID
        assert r["SeriesInstanceUID"] == ds.SeriesInstanceUID
        assert r["SOPInstanceUID"] == ds.SOPInstanceUID
        for n, t in zip(LABELS, THRESHOLDS):
            assert float(r[f"threshold_{n}"]) == pytest.approx(t)
            assert int(r[f"pred_{n}"]) == int(float(r[f"prob_{n}"]) >= float(r[f"threshold_{n}"]))
    # no patient name or ID in anything the run wrote (predictions, logs, skipped list, run records)
    written = [p for d in (out, tmp_path / "runs") if d.exists() for p in d.rglob("*") if p.is_file()]
    assert any(p.name == "predictions.csv" for p in written)
    for p in written:
        text = p.read_bytes().decode("utf-8", errors="replace")
        for secret in secrets:
            assert secret not in text, f"{secret!r} in {p.name}"


def test_a_dicom_series_gives_its_study_and_series_uids_not_one_slice(real_data):
    folder = need(real_data, "dicom/mr_t1_mprage_series")
    ds = pydicom.dcmread(sorted(folder.glob("*.dcm"))[0], stop_before_pixels=True)
    _, meta = read_image(folder, spatial_dims=3)
    assert meta["study_instance_uid"] == ds.StudyInstanceUID
    assert meta["series_instance_uid"] == ds.SeriesInstanceUID
    assert meta["sop_instance_uid"] == ""  # a series of 176 files is no single instance
    assert str(ds.PatientName) not in repr(meta) and str(ds.PatientID) not in repr(meta)


def test_malformed_uids_are_left_out(tmp_path):
    from medclass.transforms.readers.dicom import dicom_uids

    ds = pydicom.Dataset()
    ds.StudyInstanceUID = "1.2.840.10008.1"
    ds.SeriesInstanceUID = "Doe^Jane"  # not a UID: never copied out
    ds.SOPInstanceUID = "1." + "2" * 70  # longer than a UID may be
    assert dicom_uids(ds) == {"study_instance_uid": "1.2.840.10008.1", "series_instance_uid": "",
                              "sop_instance_uid": ""}

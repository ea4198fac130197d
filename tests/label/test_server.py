"""MONAI Label serving medclass bundles: a real ``monailabel start_server`` on 127.0.0.1, called over HTTP.

The server serves temporary copies of both bundles (tiny settings) with models made here: the chest X-ray one
trained one epoch through the bundle's train workflow (:meth:`BundleModel.train`), the volume one a freshly built
classifier. Its datastore holds a real chest X-ray DICOM and a real IXI T1 NIfTI volume. Probabilities are
checked against the bundle's own ``inference`` workflow run from the command line, as the README shows it.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medclass.label.bundle import BundleModel, parse_label_value, write_label_csv
from tests.label.common import CXR_DICOM, CXR_THRESHOLDS, ROOT, VOLUME, bundle_cli_inference, sha


# ---------------------------------------------------------------------------------------------- no server needed
def test_label_values_and_csv(tmp_path):
    assert parse_label_value("yes", "x") == 1.0 and parse_label_value(0, "x") == 0.0
    assert math.isnan(parse_label_value(None, "x")) and math.isnan(parse_label_value("", "x"))
    with pytest.raises(ValueError, match="image a, label 'nodule': label value 2"):
        parse_label_value(2, "image a, label 'nodule'")
    n = write_label_csv(tmp_path / "l.csv", [("/i/a.png", "a", {"y": 1.0}), ("/i/b.png", "b", {"x": 0.0})], ["x", "y"])
    assert n == 2
    assert (tmp_path / "l.csv").read_text().splitlines() == ["image,id,x,y", "/i/a.png,a,,1", "/i/b.png,b,0,"]


def test_failed_training_keeps_the_model(bundles, tmp_path):
    cxr = bundles["cxr_classification"]
    before = sha(cxr / "models" / "model.pt")
    bad = tmp_path / "bad.csv"
    write_label_csv(bad, [(str(tmp_path / f"missing_{i}.png"), f"m{i}", {"nodule": 1.0}) for i in range(10)],
                    ["nodule", "effusion", "cardiomegaly", "pneumothorax"])
    with pytest.raises(ValueError, match=r"training stopped, .*model.pt unchanged: .*missing_0.png"):
        BundleModel(cxr).train(bad, max_epochs=1)
    assert sha(cxr / "models" / "model.pt") == before
    assert not list((cxr / "models").glob(".train-*"))


def test_datastore_labels_from_image_info_and_json_label_files(tmp_path):
    pytest.importorskip("monailabel", reason="MONAI Label is not installed (bash scripts/install_label.sh)")
    from monailabel.datastore.local import LocalDatastore

    from medclass.label.application import datastore_labels

    studies = tmp_path / "studies"
    studies.mkdir()
    for name in ("a", "b", "c"):
        (studies / f"{name}.png").write_bytes(b"png")
    ds = LocalDatastore(str(studies), extensions=["*.png"], auto_reload=False)
    ds.update_image_info("a", {"labels": {"Effusion": 1, "nodule": None, "other_bundle_label": 1}})
    label = tmp_path / "b.json"
    label.write_text(json.dumps({"labels": {"nodule": "no", "effusion": True}}))
    ds.save_label("b", str(label), "final", {})
    rows = {image_id: (path, labels) for path, image_id, labels in datastore_labels(ds, ["nodule", "effusion"])}
    assert set(rows) == {"a", "b"}  # c has no labels
    assert rows["a"][0] == str((studies / "a.png").resolve())
    assert rows["a"][1]["effusion"] == 1.0 and math.isnan(rows["a"][1]["nodule"])
    assert rows["b"][1] == {"nodule": 0.0, "effusion": 1.0}
    ds.update_image_info("c", {"labels": {"nodule": 3}})
    with pytest.raises(ValueError, match="image c, label 'nodule': label value 3"):
        datastore_labels(ds, ["nodule", "effusion"])


def test_info_lists_both_bundles_as_classification_models(server):
    import requests

    info = requests.get(f"{server['url']}/info/", timeout=30).json()
    models = info["models"]
    assert models["cxr_classification"]["type"] == "classification"
    assert models["cxr_classification"]["dimension"] == 2
    assert models["cxr_classification"]["labels"] == ["nodule", "effusion", "cardiomegaly", "pneumothorax"]
    assert models["volume_classification"]["type"] == "classification"
    assert models["volume_classification"]["dimension"] == 3
    # each bundle's own default saliency method (3D: SmoothGrad, see benchmarks/RESULTS.md)
    assert models["cxr_classification"]["config"]["saliency_method"] == "gradcam"
    assert models["volume_classification"]["config"]["saliency_method"] == "smoothgrad"
    assert set(info["trainers"]) == {"cxr_classification", "volume_classification"}
    # each bundle also in the form 3D Slicer runs: a segmentation model of the top finding's saliency
    assert models["cxr_classification_saliency"]["type"] == "segmentation"
    assert models["volume_classification_saliency"]["dimension"] == 3
    assert info["datastore"]["total"] == 2  # the DICOM is listed too (not link.dcm, a symlink leaving the studies)
    # the settings a client may change, with their ranges, and the server's limits
    settings = info["trainers"]["cxr_classification"]["settings"]
    assert settings["max_epochs"] == {"type": "int", "min": 1, "max": 1000, "doc": "training epochs"}
    assert {"learning_rate", "batch_size", "seed"} <= set(settings)
    assert info["limits"] == {"infer_workers": 2, "infer_queue": 4, "max_upload_mb": 8}


@pytest.mark.parametrize("name,image_id,source", [("cxr_classification", "chest", CXR_DICOM),
                                                  ("volume_classification", "head", VOLUME)])
def test_infer_matches_the_bundle_inference_workflow(server, real_data, tmp_path, name, image_id, source):
    import requests

    res = requests.post(f"{server['url']}/infer/{name}", params={"image": image_id, "output": "json"},
                        data={"params": "{}"}, timeout=300)
    assert res.status_code == 200, res.text
    out = res.json()
    ref = bundle_cli_inference(server[name], real_data / source, tmp_path / "cli")
    names = [x["name"] for x in out["labels"]]
    assert names == BundleModel(server[name]).label_names
    for x in out["labels"]:
        assert x["probability"] == pytest.approx(float(ref[f"prob_{x['name']}"]), abs=1e-4)
        assert x["prediction"] == int(ref[f"pred_{x['name']}"])
        assert x["prediction"] == int(x["probability"] >= x["threshold"])
    if name == "cxr_classification":
        assert [x["threshold"] for x in out["labels"]] == pytest.approx(CXR_THRESHOLDS)
    assert out["top_label"] == max(out["labels"], key=lambda x: x["probability"])["name"]

    # the same image uploaded (as a viewer without access to the datastore does) gives the same answer
    with open(real_data / source, "rb") as f:
        up = requests.post(f"{server['url']}/infer/{name}", params={"output": "json"},
                           files={"file": (Path(source).name, f)}, data={"params": "{}"}, timeout=300)
    assert up.status_code == 200, up.text
    assert up.json()["probabilities"] == pytest.approx(out["probabilities"], abs=1e-6)


def test_saliency_image_has_the_input_shape(server, real_data):
    import nibabel as nib
    import pydicom
    import requests
    from PIL import Image
    from requests_toolbelt.multipart.decoder import MultipartDecoder

    # 2D: multipart answer (JSON + PNG), the PNG has the DICOM's rows x columns
    res = requests.post(f"{server['url']}/infer/cxr_classification", params={"image": "chest"},
                        data={"params": json.dumps({"saliency": True})}, timeout=300)
    assert res.status_code == 200, res.text
    parts = {p.headers[b"Content-Disposition"].decode().split('name="')[1].split('"')[0]: p
             for p in MultipartDecoder.from_response(res).parts}
    params = json.loads(parts["params"].text)
    assert params["saliency"]["label"] == params["top_label"] and params["saliency"]["format"] == "png"
    png = Image.open(__import__("io").BytesIO(parts["image"].content))
    ds = pydicom.dcmread(real_data / CXR_DICOM, stop_before_pixels=True)
    assert (png.height, png.width) == (ds.Rows, ds.Columns)
    arr = np.asarray(png)
    assert arr.max() > arr.min()  # a map, not a blank image

    # 3D: the NIfTI map has the input volume's shape and affine
    res = requests.post(f"{server['url']}/infer/volume_classification", params={"image": "head", "output": "image"},
                        data={"params": json.dumps({"saliency": True})}, timeout=300)
    assert res.status_code == 200, res.text
    out = server["tmp"] / "saliency.nii.gz"
    out.write_bytes(res.content)
    sal, src = nib.load(out), nib.load(real_data / VOLUME)
    assert sal.shape == src.shape
    assert np.allclose(sal.affine, src.affine, atol=1e-4)
    data = np.asarray(sal.dataobj)
    assert 0.0 <= data.min() < data.max() <= 1.0


def test_non_image_upload_is_a_4xx_and_the_server_keeps_serving(server, tmp_path):
    import requests

    junk = tmp_path / "notes.txt"
    junk.write_text("not an image\n")
    # a file type that is no image is refused before it is stored; one named as an image, when it is read
    for name, status, says in (("notes.txt", 415, "file type not accepted"), ("notes.png", 422, "cannot read image")):
        with open(junk, "rb") as f:
            res = requests.post(f"{server['url']}/infer/cxr_classification", files={"file": (name, f)},
                                data={"params": "{}"}, timeout=120)
        assert res.status_code == status, res.text
        assert says in res.json()["detail"]
    # a 2D image given to the 3D bundle is refused the same way, naming the reason
    res = requests.post(f"{server['url']}/infer/volume_classification", params={"image": "chest", "output": "json"},
                        data={"params": "{}"}, timeout=120)
    assert 400 <= res.status_code < 500 and "2D image" in res.json()["detail"]
    assert server["proc"].poll() is None
    assert requests.get(f"{server['url']}/info/", timeout=30).status_code == 200
    ok = requests.post(f"{server['url']}/infer/cxr_classification", params={"image": "chest", "output": "json"},
                       data={"params": "{}"}, timeout=300)
    assert ok.status_code == 200


def test_train_endpoint_retrains_from_datastore_labels(server):
    """Images and image-level labels go into the datastore over HTTP; /train runs the bundle's train workflow."""
    import requests

    url, cxr = server["url"], server["cxr_classification"]
    labels = BundleModel(cxr).label_names
    rows = list(csv.DictReader(open(server["phantoms2d"] / "datalist.csv")))[:20]
    for r in rows:
        path = server["phantoms2d"] / r["image"]
        with open(path, "rb") as f:
            res = requests.put(f"{url}/datastore/image", params={"image": f"ph_{path.stem}"},
                               files={"file": (path.name, f)}, data={"params": "{}"}, timeout=60)
        assert res.status_code == 200, res.text
        info = {"labels": {n: int(float(r[n])) for n in labels}}
        res = requests.put(f"{url}/datastore/image/info", params={"image": f"ph_{path.stem}"},
                           data={"info": json.dumps(info)}, timeout=60)
        assert res.status_code == 200, res.text
    model = cxr / "models" / "model.pt"
    before = sha(model)
    probs_before = requests.post(f"{url}/infer/cxr_classification", params={"image": "chest", "output": "json"},
                                 data={"params": "{}"}, timeout=300).json()["probabilities"]

    res = requests.post(f"{url}/train/cxr_classification", json={"max_epochs": 1}, timeout=60)
    assert res.status_code == 200, res.text
    from medclass.label.launch import wait_for_training

    status = wait_for_training(url, timeout=300, poll=1)
    details = "\n".join(status.get("details", []))
    assert status["status"] == "DONE", details + server["log"].read_text()[-3000:]
    assert "'training': " in details  # the summary names the split sizes (20 labelled images)
    assert sha(model) != before
    assert sha(cxr / "models" / "model.previous.pt") == before
    # the server answers with the new model
    after = requests.post(f"{url}/infer/cxr_classification", params={"image": "chest", "output": "json"},
                          data={"params": "{}"}, timeout=300).json()["probabilities"]
    assert after != pytest.approx(probs_before, abs=1e-7)


@pytest.mark.slow
def test_tutorial_04_monai_label(real_data, tmp_path):
    pytest.importorskip("monailabel", reason="MONAI Label is not installed (bash scripts/install_label.sh)")
    res = subprocess.run([sys.executable, str(ROOT / "tutorials" / "04_monai_label.py"), "--tiny", "--workdir",
                          str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "monailabel start_server --app" in res.stdout and "--uvicorn_app medclass.label.server:app" in res.stdout
    assert "training DONE" in res.stdout and "server stopped" in res.stdout
    assert "3D Slicer's Auto Segmentation" in res.stdout and "  segment '" in res.stdout
    from PIL import Image

    png = Image.open(tmp_path / "saliency.png")  # cxr_0 is CR-MONO1-10-chest.dcm (440 x 440)
    ds = __import__("pydicom").dcmread(real_data / "dicom" / "chest_xray" / "CR-MONO1-10-chest.dcm", force=True,
                                       stop_before_pixels=True)
    assert (png.height, png.width) == (ds.Rows, ds.Columns)

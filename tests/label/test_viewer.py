"""What a viewer does, with MONAI Label's own client (``monailabel.client.MONAILabelClient``, the one 3D Slicer's
module uses) against the real server of conftest.py: inference results it decodes, the segmentation-type model
Slicer runs, labels from Slicer next to image-level labels, training stopped cleanly, unknown ids."""

from __future__ import annotations

import itertools
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from tests.label.common import CXR_DICOM, VOLUME


@pytest.fixture()
def client(server, tmp_path):
    pytest.importorskip("monailabel")
    from monailabel.client import MONAILabelClient

    return MONAILabelClient(server["url"], tmpdir=str(tmp_path))


def _slicer_params(client, model: str) -> dict:
    """The params 3D Slicer's module sends: the model's config from /info (first value of lists), plus its own."""
    config = client.info()["models"][model].get("config", {})
    params = {k: v[0] if isinstance(v, list) else v for k, v in config.items()}
    return {**params, "result_extension": ".nrrd", "result_dtype": "uint8"}


@pytest.mark.parametrize("model,image_id", [("cxr_classification", "chest"), ("volume_classification", "head")])
def test_official_client_decodes_every_infer_answer(client, model, image_id):
    for saliency in (False, True):
        params = {"saliency": saliency} if saliency else {}
        result_file, result = client.infer(model, image_id, params)
        assert isinstance(result, dict), type(result)  # decoded, not bytes
        names = [x["name"] for x in result["labels"]]
        assert result["top_label"] in names and set(result["probabilities"]) == set(names)
        assert all(x["prediction"] == int(x["probability"] >= x["threshold"]) for x in result["labels"])
        assert result_file is not None and Path(result_file).is_file()
        if saliency:
            assert result["saliency"]["label"] == result["top_label"]
            assert Path(result_file).suffix in (".png", ".gz")
        else:
            assert Path(result_file).name == "result.json" and json.loads(Path(result_file).read_text()) == result


def _corners(image) -> set[tuple[float, ...]]:
    """Physical positions of an image's corner voxel centres: the same set for the same grid, however its axes
    are ordered or flipped."""
    size = image.GetSize()
    corners = set()
    for index in itertools.product(*[(0, s - 1) for s in size]):
        corners.add(tuple(round(c, 2) for c in image.TransformIndexToPhysicalPoint([int(i) for i in index])))
    return corners


@pytest.mark.parametrize("model,image_id,source", [("cxr_classification_saliency", "chest", CXR_DICOM),
                                                   ("volume_classification_saliency", "head", VOLUME)])
def test_slicer_runs_the_segmentation_form(client, real_data, model, image_id, source):
    """The call Slicer's *Auto Segmentation* makes: a uint8 label map on the input's grid, one segment named after
    the top finding with its probability, every probability in the params."""
    sitk = pytest.importorskip("SimpleITK")
    result_file, params = client.infer(model, image_id, _slicer_params(client, model))
    assert isinstance(params, dict) and len(params["label_names"]) == 1
    top = next(x for x in params["labels"] if x["name"] == params["top_label"])
    assert params["label_names"][0].startswith(f"{top['name']} p={top['probability']:.2f}")
    mask = sitk.ReadImage(result_file)  # as Slicer's module reads it
    arr = sitk.GetArrayFromImage(mask)
    assert arr.dtype == np.uint8 and set(np.unique(arr)) <= {0, 1} and arr.max() == 1
    src = sitk.ReadImage(str(real_data / source))
    assert _corners(mask) == _corners(src)  # the same physical grid as the image Slicer shows


def test_slicer_session_upload_then_segmentation(client, real_data):
    """An image that is not in the datastore: Slicer uploads it as a session, then runs the model on the session."""
    session = client.create_session(str(real_data / VOLUME))
    result_file, params = client.infer("volume_classification_saliency", "", _slicer_params(
        client, "volume_classification_saliency"), session_id=session["session_id"])
    assert params["top_label"] and Path(result_file).is_file()


def test_slicer_label_keeps_image_level_labels_and_next_sample_skips_labelled(client, server, tmp_path):
    import requests

    url = server["url"]
    requests.put(f"{url}/datastore/image/info", params={"image": "head"},
                 data={"info": json.dumps({"labels": {"mass": 1}})}, timeout=60).raise_for_status()
    # what Slicer's Submit Label sends: a segmentation file as the final label
    nib = pytest.importorskip("nibabel")
    seg = tmp_path / "head.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), str(seg))
    client.save_label("head", str(seg), params={"label_info": [{"name": "mass", "idx": 1}]})
    # a JSON final label later still adds image-level labels and does not drop the segmentation's tag either
    from medclass.label.application import SafeLocalDatastore, datastore_labels

    ds = SafeLocalDatastore(str(server["studies"]), extensions=["*.nii.gz", "*.dcm"], auto_reload=False)
    rows = {image_id: labels for _, image_id, labels in datastore_labels(ds, ["mass", "cyst", "calcification"])}
    assert rows["head"]["mass"] == 1.0  # the segmentation did not take the image-level label away
    assert ds.get_label_uri("head", "final").endswith(".nii.gz")
    assert "head" in ds.get_labeled_images() and "head" not in ds.get_unlabeled_images()
    # "chest" is the only image without labels: Next Sample offers it every time
    for _ in range(5):
        assert client.next_sample("random", {})["id"] == "chest"
    label = tmp_path / "chest.json"
    label.write_text(json.dumps({"labels": {"nodule": "yes"}}))
    client.save_label("chest", str(label))
    ds = SafeLocalDatastore(str(server["studies"]), extensions=["*.nii.gz", "*.dcm"], auto_reload=False)
    assert ds.get_image_info("chest")["labels"] == {"nodule": "yes"}
    assert ds.get_unlabeled_images() == []
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"labels": {"nodule": 7}}))
    with pytest.raises(Exception, match="422"):
        client.save_label("chest", str(bad))


def test_train_stop_leaves_no_work_folder(client, server):
    from medclass.label.launch import wait_for_training

    allowed = server["allowed"] / "phantoms"
    shutil.copytree(server["phantoms2d"], allowed, dirs_exist_ok=True)
    models = server["cxr_classification"] / "models"
    client.train_start("cxr_classification", {"datalist": str(allowed / "datalist.csv"), "max_epochs": 200})
    t0 = time.monotonic()
    while not list(models.glob(".train-*")) and time.monotonic() - t0 < 120:
        time.sleep(0.2)
    assert list(models.glob(".train-*")), "the training never started"
    # a training run does not block inference on the current model
    t0 = time.monotonic()
    _, result = client.infer("cxr_classification", "chest", {})
    assert result["top_label"] and time.monotonic() - t0 < 60
    assert client.train_status(check_if_running=True)  # still training meanwhile
    client.train_stop()
    assert wait_for_training(server["url"], timeout=60)["status"] == "STOPPED"
    assert not list(models.glob(".train-*"))


def test_unknown_ids_are_404_not_found(client):
    from monailabel.client.client import MONAILabelClientException

    with pytest.raises(MONAILabelClientException) as e:
        client.infer("cxr_classification", "no_such_image", {})
    assert "404" in e.value.msg and "not in the datastore" in e.value.msg
    with pytest.raises(MONAILabelClientException) as e:
        client.infer("no_such_model", "chest", {})
    assert "404" in e.value.msg


def test_the_same_chest_xray_as_dicom_png_and_viewer_nifti_gives_the_same_answer(client, real_data, tmp_path):
    """What a viewer uploads: the DICOM, a PNG of it, and the NIfTI 3D Slicer / SimpleITK writes of it
    ((columns, rows, 1), LPS direction): the same probabilities, and a map asked for the NIfTI comes back on the
    NIfTI's own grid and affine."""
    sitk = pytest.importorskip("SimpleITK")
    nib = pytest.importorskip("nibabel")
    from PIL import Image

    dicom = real_data / CXR_DICOM
    png, nifti = tmp_path / "cxr.png", tmp_path / "cxr.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(dicom)), str(nifti))
    pixels = sitk.GetArrayFromImage(sitk.ReadImage(str(dicom)))[0]  # (rows, columns)
    assert pixels.dtype == np.uint8  # this DX is stored in 8 bits: its PNG holds the same values
    Image.fromarray(pixels).save(png)
    assert nib.load(str(nifti)).shape[:2] == pixels.shape[::-1]  # the NIfTI stores (columns, rows)
    probs = {}
    for path in (dicom, png, nifti):
        _, result = client.infer("cxr_classification", "", {}, file=str(path))
        probs[path.suffix] = np.array([x["probability"] for x in result["labels"]])
    assert np.allclose(probs[".dcm"], probs[".png"], atol=1e-4), probs
    assert np.allclose(probs[".dcm"], probs[".gz"], atol=1e-4), probs
    map_file, result = client.infer("cxr_classification", "", {"saliency": True}, file=str(nifti))
    assert result["saliency"]["format"] == "nifti"
    sal, src = nib.load(map_file), nib.load(str(nifti))
    assert sal.shape == src.shape and np.allclose(sal.affine, src.affine, atol=1e-4)

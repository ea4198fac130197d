"""The server's input rules on their own (no server, no MONAI Label): medclass.label.safety and the worker pool."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from medclass.label.safety import (
    CLIENT_TRAIN_KEYS, OPERATOR_KEYS, ClientError, check_datalist, check_id, check_infer_params, check_overrides,
    check_train_request, config_code, inside, upload_extension,
)
from medclass.label.workers import WorkerPool


@pytest.mark.parametrize("value", [
    "$print(1)", "@network_def", "%configs/common.yaml#arch", "a#b", "x$y", ["ok", "$x"], {"k": ["@x"]},
    {"_target_": "os.system"}, {"_requires_": "x"}, {"_disabled_": True}, {"$k": 1}, {1: 2}, object(),
])
def test_config_code_is_found_at_any_depth(value):
    assert config_code(value) is not None


@pytest.mark.parametrize("value", [1, 2.5, True, None, "fp32", "labels.csv", [1, 2], {"flip_prob": 0.5}, "a-b_c.d"])
def test_plain_data_passes(value):
    assert config_code(value) is None


def test_overrides_allowlist_types_and_ranges():
    assert check_overrides({"max_epochs": 3, "learning_rate": 1e-3, "seed": 2.0}, CLIENT_TRAIN_KEYS) == {
        "max_epochs": 3, "learning_rate": 1e-3, "seed": 2}
    for values, says in (({"max_epochs": True}, "must be a number"), ({"max_epochs": 1.5}, "must be a number"),
                         ({"learning_rate": "0.1"}, "must be a number"), ({"learning_rate": float("nan")}, "number"),
                         ({"batch_size": 0}, "between 1 and 1024"), ({"arch": "vit"}, "'arch' may not be changed"),
                         ({"num_threads": 2}, "'num_threads' may not be changed")):
        with pytest.raises(ClientError, match=says) as e:
            check_overrides(values, CLIENT_TRAIN_KEYS)
        assert e.value.status == 422
    # the operator's list is wider, and widened further only by naming keys
    assert check_overrides({"num_threads": 2}, OPERATOR_KEYS) == {"num_threads": 2}
    assert check_overrides({"precision": "fp32"}, OPERATOR_KEYS, extra_keys=["precision"]) == {"precision": "fp32"}
    with pytest.raises(ClientError, match="refused"):
        check_overrides({"precision": "$'fp32'"}, OPERATOR_KEYS, extra_keys=["precision"])
    with pytest.raises(ClientError, match="JSON object"):
        check_overrides(["max_epochs", 1], CLIENT_TRAIN_KEYS)


def test_train_request_merges_top_level_and_overrides_and_drops_client_keys(tmp_path):
    studies = tmp_path / "studies"
    studies.mkdir()
    (studies / "l.csv").write_text("image\n")
    out = check_train_request({"max_epochs": 2, "overrides": {"max_epochs": 5, "seed": 1}, "from_scratch": True,
                               "datalist": "l.csv", "client_id": "slicer", "model": "m", "local_rank": 0}, [studies])
    assert out == {"from_scratch": True, "datalist": os.path.realpath(studies / "l.csv"),
                   "overrides": {"max_epochs": 2, "seed": 1}}
    assert check_train_request(None, [studies]) == {}
    with pytest.raises(ClientError, match="'bundle_path' may not be changed"):
        check_train_request({"bundle_path": str(tmp_path)}, [studies])


def test_datalist_outside_the_roots_gets_one_answer(tmp_path):
    studies, other = tmp_path / "studies", tmp_path / "other"
    studies.mkdir()
    other.mkdir()
    (other / "x.csv").write_text("image\n")
    (studies / "link.csv").symlink_to(other / "x.csv")
    (studies / "notes.txt").write_text("x")
    messages = set()
    for value in (str(other / "x.csv"), str(other / "y.csv"), "../other/x.csv", "link.csv", "notes.txt", "",
                  "file:///etc/passwd", 3, "$x"):
        with pytest.raises(ClientError) as e:
            check_datalist(value, [studies])
        messages.add((e.value.status, str(e.value)))
    assert len(messages) == 1 and messages.pop()[0] == 404
    assert check_datalist(str(other / "x.csv"), [studies, other]) == os.path.realpath(other / "x.csv")


def test_ids_and_containment(tmp_path):
    assert check_id("IXI012-HH_1.2") == "IXI012-HH_1.2"
    answers = set()
    for bad in ("../x", "/etc/passwd", "a/b", "", ".hidden", "a..b", "x" * 129, None, "http://h/x"):
        with pytest.raises(ClientError) as e:
            check_id(bad)
        answers.add((e.value.status, str(e.value)))
    assert answers == {(404, "the image given is not in the datastore: name a datastore id or upload the file")}
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "f").write_text("x")
    (tmp_path / "in" / "out").symlink_to(tmp_path)
    assert inside(tmp_path / "in" / "f", [tmp_path / "in"])
    assert not inside(tmp_path / "in" / "out" / "x", [tmp_path / "in"])
    assert not inside(tmp_path / "in" / ".." / "f", [tmp_path / "in"])


def test_upload_extension_keeps_only_an_allowed_suffix():
    assert upload_extension("../../a.NII.GZ") == ".nii.gz"
    assert upload_extension("scan.dcm") == ".dcm"
    assert upload_extension("0001", head=b"\0" * 128 + b"DICM") == ".dcm"  # DICOM straight from PACS
    for name in ("x.py", "x.nii.gz.py", ".png", "", None, "0001"):
        with pytest.raises(ClientError) as e:
            upload_extension(name)
        assert e.value.status == 415


def test_infer_params():
    methods = ["gradcam", "smoothgrad"]
    assert check_infer_params({"saliency": True, "saliency_method": "gradcam", "client_id": "x"}, methods) == {
        "saliency": True, "saliency_method": "gradcam"}
    for params, says in (({"image": "/etc/passwd"}, "'image' is not a parameter"), ({"saliency": "maybe"}, "true"),
                         ({"saliency_method": "rm -rf"}, "must be one of"), ({"save_label": True}, "not a parameter"),
                         ({"saliency_method": "$x"}, "refused"), ([], "JSON object")):
        with pytest.raises(ClientError, match=says):
            check_infer_params(params, methods)


def test_worker_pool_refuses_beyond_its_queue_and_frees_slots():
    gate = threading.Event()

    async def scenario():
        pool = WorkerPool(workers=1, queue=1)
        first = asyncio.ensure_future(pool.run(gate.wait, 30))
        second = asyncio.ensure_future(pool.run(lambda: "queued"))
        await asyncio.sleep(0.05)
        assert pool.in_flight == 2
        with pytest.raises(ClientError) as e:
            await pool.run(lambda: "refused")
        assert e.value.status == 503 and int(e.value.headers["Retry-After"]) >= 1
        gate.set()
        assert await first is True and await second == "queued"
        assert pool.in_flight == 0
        assert await pool.run(lambda: 7) == 7  # the slots came back
        with pytest.raises(ZeroDivisionError):  # an error in the call reaches the caller and frees its slot
            await pool.run(lambda: 1 / 0)
        assert pool.in_flight == 0
        pool.shutdown()

    asyncio.run(scenario())
    with pytest.raises(ValueError):
        WorkerPool(0, 1)


def test_a_released_bundle_copy_without_common_yaml_is_served(tmp_path):
    """A bundle as the Model Zoo ships it: inference.yaml holds the values, no configs/common.yaml."""
    import shutil
    from pathlib import Path

    from medclass.label.bundle import BundleModel

    src = Path(__file__).resolve().parents[2] / "bundles" / "cxr_classification" / "configs"
    released = tmp_path / "released"
    shutil.copytree(src, released / "configs", ignore=shutil.ignore_patterns("common.yaml"))
    model = BundleModel(released)
    assert model.label_names == ["nodule", "effusion", "cardiomegaly", "pneumothorax"]
    assert model.spatial_dims == 2
    (released / "configs" / "inference.yaml").unlink()
    with pytest.raises(ValueError, match="no configs/inference.yaml"):
        BundleModel(released)

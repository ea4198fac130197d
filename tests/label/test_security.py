"""The MONAI Label server on a hospital network: a client sends data, never code or a server path.

Against the real server of conftest.py (2 inference workers, a queue of 4, 8 MB uploads, one allowed datalist
folder): config code in train settings never runs, paths and symlinks out of the datastore get the same answer
whether or not the target exists, uploads never choose a path, faults answer without tracebacks, and /info stays
prompt while inference runs.
"""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.label.common import sha

MARKER_CODE = "__import__('pathlib').Path({marker!r}).touch()"


def _post_train(server, body, model="cxr_classification"):
    import requests

    return requests.post(f"{server['url']}/train/{model}", json=body, timeout=60)


def _forms(marker: str) -> dict[str, dict]:
    """Each refused override form, top level and nested in lists and dicts, every one creating ``marker`` if run."""
    code = MARKER_CODE.format(marker=marker)
    return {
        "expression": {"max_epochs": f"${code}"},
        "expression in overrides": {"overrides": {"learning_rate": f"${code}"}},
        "reference": {"seed": "@train#trainer"},
        "macro": {"overrides": {"batch_size": "%/etc/passwd#root"}},
        "target": {"overrides": {"augment": {"_target_": "pathlib.Path.touch", "self": marker}}},
        "requires": {"max_epochs": {"_requires_": f"${code}", "value": 1}},
        "expression nested in a list": {"overrides": {"seed": [1, {"x": f"${code}"}]}},
        "expression nested in a dict": {"learning_rate": {"a": [f"${code}"]}},
        "expression as a key": {f"${code}": 1},
        "unlisted key": {"bundle_path": "/tmp"},
        "unlisted expression": {"initialize": [f"${code}"]},
    }


def test_every_config_code_form_is_refused_and_nothing_runs(server, tmp_path):
    marker = tmp_path / "marker"
    for name, body in _forms(str(marker)).items():
        res = _post_train(server, body)
        assert res.status_code == 422, (name, res.text)
        detail = res.json()["detail"]
        assert "refused" in detail or "may not be changed" in detail, (name, detail)
        assert "Traceback" not in detail
    time.sleep(1.0)
    assert not marker.exists()
    # nothing was started: the training status has no task, or only finished ones from other tests
    import requests

    status = requests.get(f"{server['url']}/train/", params={"check_if_running": True}, timeout=30)
    assert status.status_code == 404  # "No Train Tasks are currently Running"


def test_train_settings_are_type_and_range_checked(server):
    for body, says in (({"max_epochs": 0}, "between 1 and 1000"), ({"max_epochs": "5"}, "must be a number"),
                       ({"learning_rate": 2.0}, "between"), ({"from_scratch": "yes"}, "true or false"),
                       ({"batch_size": 2.5}, "must be a number"), ({"overrides": "not json"}, "JSON object")):
        res = _post_train(server, body)
        assert res.status_code == 422, res.text
        assert says in res.json()["detail"] and list(body)[0] in res.json()["detail"], res.text
    res = _post_train(server, {"max_epochs": 1}, model="no_such_model")
    assert res.status_code == 404


def test_infer_image_paths_urls_and_symlinks_get_one_answer(server, tmp_path):
    import requests

    outside = server["outside"]
    existing, missing = str(outside / "secret.dcm"), str(outside / "absent.dcm")
    rel_existing = os.path.relpath(existing, server["studies"])
    rel_missing = os.path.relpath(missing, server["studies"])
    answers = {}
    for name, image in {"absolute existing": existing, "absolute missing": missing,
                        "relative existing": rel_existing, "relative missing": rel_missing,
                        "etc passwd": "/etc/passwd", "dotdot id": "../chest", "url": "http://127.0.0.1:9/x.dcm",
                        "file url": f"file://{existing}"}.items():
        res = requests.post(f"{server['url']}/infer/cxr_classification", params={"image": image, "output": "json"},
                            data={"params": "{}"}, timeout=60)
        answers[name] = (res.status_code, res.text)
    assert {a for a in answers.values()} == {answers["absolute existing"]}, answers
    assert answers["absolute existing"][0] == 404
    assert "secret" not in answers["absolute existing"][1] and str(outside) not in answers["absolute existing"][1]
    # a datastore id whose file is a symlink leaving the studies folder: as absent as an unknown id
    link = requests.post(f"{server['url']}/infer/cxr_classification", params={"image": "link", "output": "json"},
                         data={"params": "{}"}, timeout=60)
    unknown = requests.post(f"{server['url']}/infer/cxr_classification", params={"image": "nope", "output": "json"},
                            data={"params": "{}"}, timeout=60)
    assert link.status_code == unknown.status_code == 404
    assert link.json()["detail"] == unknown.json()["detail"].replace("'nope'", "'link'")
    # the image cannot be smuggled in through params either
    res = requests.post(f"{server['url']}/infer/cxr_classification", params={"image": "chest", "output": "json"},
                        data={"params": json.dumps({"image": existing})}, timeout=60)
    assert res.status_code == 422 and "'image' is not a parameter" in res.json()["detail"]
    # nor downloaded through the datastore
    res = requests.get(f"{server['url']}/datastore/image", params={"image": "link"}, timeout=60)
    assert res.status_code == 404


def test_train_datalist_outside_the_datastore_gets_one_answer(server, tmp_path):
    outside, allowed = server["outside"], server["allowed"]
    (outside / "labels.csv").write_text("image,nodule\nsecret.dcm,1\n")
    (server["studies"] / "escape.csv").symlink_to(outside / "labels.csv")
    answers = {}
    for name, datalist in {"absolute existing": str(outside / "labels.csv"), "absolute missing": str(outside / "x.csv"),
                           "relative existing": "../outside/labels.csv", "relative missing": "../outside/x.csv",
                           "symlink": "escape.csv", "passwd": "/etc/passwd", "url": "http://127.0.0.1:9/l.csv",
                           "code": "$__import__('os')"}.items():
        res = _post_train(server, {"datalist": datalist, "max_epochs": 1})
        answers[name] = (res.status_code, res.text)
    assert {a for a in answers.values()} == {answers["absolute existing"]}, answers
    assert answers["absolute existing"][0] == 404 and str(outside) not in answers["absolute existing"][1]
    # a file in a folder the operator allowed (--conf datalist_dirs) is taken: the run starts (and fails on
    # this empty label file without touching the model)
    from medclass.label.launch import wait_for_training

    (allowed / "labels.csv").write_text("image,nodule\n")
    model = server["cxr_classification"] / "models" / "model.pt"
    before = sha(model)
    res = _post_train(server, {"datalist": str(allowed / "labels.csv"), "max_epochs": 1})
    assert res.status_code == 200, res.text
    status = wait_for_training(server["url"], timeout=300, poll=1)
    assert status["status"] == "ERROR"
    assert sha(model) == before


def test_uploads_never_choose_a_path(server, real_data, tmp_path):
    import requests

    url, studies = server["url"], server["studies"]
    png = tmp_path / "x.png"
    from PIL import Image

    Image.new("L", (32, 32), 128).save(png)
    before = set(p.name for p in server["tmp"].iterdir())
    # an id that is a path is refused; a file name with directories only gives its base name
    with open(png, "rb") as f:
        res = requests.put(f"{url}/datastore/image", params={"image": "../../escaped"},
                           files={"file": ("x.png", f)}, data={"params": "{}"}, timeout=60)
    assert res.status_code == 422 and "image id must be" in res.json()["detail"]
    with open(png, "rb") as f:
        res = requests.put(f"{url}/datastore/image", files={"file": ("../../uploaded_name.png", f)},
                           data={"params": "{}"}, timeout=60)
    assert res.status_code == 200, res.text
    assert res.json()["image"] == "uploaded_name" and (studies / "uploaded_name.png").is_file()
    # a file type that is no image is refused, even named as one's id
    with open(png, "rb") as f:
        res = requests.put(f"{url}/datastore/image", params={"image": "script"}, files={"file": ("x.py", f)},
                           data={"params": "{}"}, timeout=60)
    assert res.status_code == 415
    # a label tag becomes a folder: no path allowed
    with open(png, "rb") as f:
        res = requests.put(f"{url}/datastore/label", params={"image": "chest", "tag": "../../x"},
                           files={"label": ("l.png", f)}, data={"params": "{}"}, timeout=60)
    assert res.status_code == 422 and "label tag must be" in res.json()["detail"]
    assert set(p.name for p in server["tmp"].iterdir()) == before  # nothing written beside the studies folder
    assert not list(studies.parent.parent.glob("escaped*")) and not list(studies.parent.glob("escaped*"))
    assert not list(studies.glob("script*"))
    # an upload over the limit (8 MB here) is refused before it is stored
    big = tmp_path / "big.png"
    big.write_bytes(os.urandom(9 << 20))
    with open(big, "rb") as f:
        res = requests.post(f"{url}/infer/cxr_classification", params={"output": "json"},
                            files={"file": ("big.png", f)}, data={"params": "{}"}, timeout=120)
    assert res.status_code == 413
    # a session keeps the server's own names for the files; inference on it works
    with open(real_data / "dicom" / "chest_xray" / "CR-MONO1-10-chest.dcm", "rb") as f:
        res = requests.put(f"{url}/session/", files={"files": ("../../../evil.dcm", f)}, timeout=60)
    assert res.status_code == 200, res.text
    session = res.json()
    assert Path(session["session_info"]["image"]).name == "00000.dcm"
    res = requests.post(f"{url}/infer/cxr_classification", params={"session_id": session["session_id"],
                                                                   "output": "json"},
                        data={"params": "{}"}, timeout=120)
    assert res.status_code == 200, res.text
    res = requests.put(f"{url}/session/", params={"uncompress": True}, files={"files": ("a.dcm", b"x" * 200)},
                       timeout=60)
    assert res.status_code == 422
    assert requests.delete(f"{url}/datastore/image", params={"id": "uploaded_name"}, timeout=60).status_code == 200


def test_endpoints_a_client_must_not_reach_are_not_served(server, tmp_path):
    import requests

    url = server["url"]
    model = server["cxr_classification"] / "models" / "model.pt"
    before = sha(model)
    res = requests.put(f"{url}/model/cxr_classification", files={"file": ("m.pt", b"not a model")}, timeout=60)
    assert res.status_code == 404
    assert requests.delete(f"{url}/model/cxr_classification", timeout=60).status_code == 404
    assert sha(model) == before
    for method, path in (("GET", "/logs/"), ("POST", "/batch/infer/cxr_classification"), ("POST", "/reload"),
                         ("POST", "/scoring/dice")):
        assert requests.request(method, f"{url}{path}", timeout=60).status_code == 404, path


def test_a_server_fault_answers_500_without_traceback_or_paths(server):
    import requests

    model = server["cxr_classification"] / "models" / "model.pt"
    good = model.read_bytes()
    try:
        model.write_bytes(b"this is not a checkpoint")  # the server's own file broken: a fault, not the client's
        res = requests.post(f"{server['url']}/infer/cxr_classification", params={"image": "chest", "output": "json"},
                            data={"params": "{}"}, timeout=120)
    finally:
        tmp = model.with_suffix(".restore")
        tmp.write_bytes(good)
        os.replace(tmp, model)
    assert res.status_code == 500
    body = res.text
    assert "Traceback" not in body and "/tmp" not in body and str(model.parent) not in body
    assert "reference" in res.json()["detail"]
    ref = res.json()["detail"].split("reference ")[1].split(";")[0]
    assert ref in server["log"].read_text()  # the details went to the server log
    ok = requests.post(f"{server['url']}/infer/cxr_classification", params={"image": "chest", "output": "json"},
                       data={"params": "{}"}, timeout=120)
    assert ok.status_code == 200  # the restored model is picked up


def _infer_slowly(server, n: int, results: list, started: threading.Event) -> None:
    import requests

    def one(_):
        r = requests.post(f"{server['url']}/infer/volume_classification", params={"image": "head", "output": "json"},
                          data={"params": json.dumps({"saliency": True, "saliency_method": "smoothgrad"})}, timeout=600)
        return r.status_code, r.headers.get("Retry-After"), time.monotonic()

    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(one, i) for i in range(n)]
        started.set()
        results.extend(f.result() for f in futures)


def test_info_answers_while_inference_runs(server):
    """Not a timed benchmark: /info must not wait for the inferences in flight (it waited for all of them when
    inference ran on the event loop). Margins are generous."""
    import requests

    results: list = []
    started = threading.Event()
    worker = threading.Thread(target=_infer_slowly, args=(server, 6, results, started))  # 2 running + 4 queued
    worker.start()
    started.wait()
    time.sleep(0.5)
    info_times, info_end = [], 0.0
    for _ in range(5):
        t0 = time.monotonic()
        assert requests.get(f"{server['url']}/info/", timeout=60).status_code == 200
        info_end = time.monotonic()
        info_times.append(info_end - t0)
    worker.join()
    assert [s for s, _, _ in results] == [200] * 6
    last_infer = max(t for _, _, t in results)
    assert last_infer > info_end, "the inferences ended before /info was asked: the test measured nothing"
    assert max(info_times) < 2.0, info_times


def test_a_full_queue_answers_503_with_retry_after(server):
    results: list = []
    started = threading.Event()
    _infer_slowly(server, 12, results, started)  # 2 workers + 4 queued: the rest are refused at once
    statuses = sorted(s for s, _, _ in results)
    assert set(statuses) == {200, 503} and statuses.count(200) >= 6, statuses
    assert all(int(r) >= 1 for s, r, _ in results if s == 503)


def test_startup_overrides_are_checked_like_a_clients(server, tmp_path):
    """A ``--conf bundle_overrides`` with code stops the server before it serves; the operator widens the
    allowlist only by naming keys, and even then no code passes."""
    pytest.importorskip("monailabel")
    from medclass.label.safety import ClientError, OPERATOR_KEYS, check_overrides

    marker = tmp_path / "marker"
    code = "$" + MARKER_CODE.format(marker=str(marker))
    with pytest.raises(ClientError, match="num_threads"):
        check_overrides({"num_threads": code}, OPERATOR_KEYS, where="--conf bundle_overrides")
    with pytest.raises(ClientError, match="'precision' may not be changed"):
        check_overrides({"precision": "fp32"}, OPERATOR_KEYS)
    assert check_overrides({"precision": "fp32"}, OPERATOR_KEYS, extra_keys=["precision"]) == {"precision": "fp32"}
    with pytest.raises(ClientError, match="refused"):
        check_overrides({"precision": code}, OPERATOR_KEYS, extra_keys=["precision"])

    # a real server given code in bundle_overrides exits with the reason, and the code never ran
    from medclass.cli import main as medclass_cli
    from medclass.label.launch import start_server, stop_server

    assert medclass_cli(["label-app", str(tmp_path / "app")]) == 0
    log = tmp_path / "server.log"
    proc, _ = start_server(tmp_path / "app", server["studies"], [server["cxr_classification"]], log_file=log,
                           extra_conf={"bundle_overrides": json.dumps({"num_threads": code})})
    try:
        proc.wait(timeout=120)
    finally:
        stop_server(proc)
    assert proc.returncode != 0
    text = log.read_text()
    assert "num_threads" in text and "refused" in text
    assert not marker.exists()

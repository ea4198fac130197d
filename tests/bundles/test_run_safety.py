"""Runs lose nothing, never silently do the wrong thing, and say in one sentence what went wrong (issue 18).

Every test drives the bundle commands in a subprocess (``python -m monai.bundle run`` as the README shows it, or
``medclass run``) on a copy of the chest X-ray bundle's configs in a temporary folder, so the bundle's own default
folders (``models/``, ``eval/``, ``inference/``) are exercised without touching the repository, and asserts on
the files and the exit status.
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from medclass.networks.factory import ARCHS

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundles" / "cxr_classification"
PHANTOMS = {"n": 48, "size": 64, "seed": 1}
TINY = ["--image_size", "[64, 64]", "--width", "8", "--batch_size", "8", "--phantoms", json.dumps(PHANTOMS),
        "--bootstrap_samples", "20", "--num_threads", "1"]


def bundle_copy(dst: Path) -> Path:
    """The bundle's configs in ``dst``: its default folders (models/, eval/, inference/) are then under ``dst``."""
    shutil.copytree(BUNDLE / "configs", dst / "configs")
    return dst


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), e.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    e["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), e.get("PATH", "")])
    return e


def command(bundle: Path, workflow: str, *args: str, runner: str = "monai") -> list[str]:
    if runner == "medclass":
        return [sys.executable, "-m", "medclass.cli", "run", workflow, *args]
    files = {"inference": "configs/inference.yaml",
             "multi_gpu_train": "['configs/inference.yaml','configs/train.yaml','configs/multi_gpu_train.yaml']"}.get(
        workflow, f"['configs/inference.yaml','configs/{workflow}.yaml']")
    return [sys.executable, "-m", "monai.bundle", "run", "--config_file", files, "--bundle_root", str(bundle), *args]


def run(bundle: Path, workflow: str, *args: str, runner: str = "monai", data: Path | None = None,
        timeout: int = 300) -> subprocess.CompletedProcess:
    extra = [*TINY, "--dataset_dir", str(data)] if data is not None else list(TINY)
    if workflow == "train":
        extra += ["--progress_bar", "false"]
    return subprocess.run(command(bundle, workflow, *extra, *args, runner=runner), cwd=bundle, capture_output=True,
                          text=True, timeout=timeout, env=env())


def output(res: subprocess.CompletedProcess) -> str:
    return res.stdout + res.stderr


def last_lines(res: subprocess.CompletedProcess, n: int = 2) -> list[str]:
    return [ln for ln in res.stderr.splitlines() if ln.strip()][-n:]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """The tiny phantom set, made once (bundle runs read it through --dataset_dir)."""
    from medclass.workflow import prepare_data

    folder = tmp_path_factory.mktemp("phantoms")
    prepare_data(None, folder, phantoms=PHANTOMS)
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data) -> Path:
    """A bundle copy trained for one epoch into its default models/."""
    bundle = bundle_copy(tmp_path_factory.mktemp("trained"))
    res = run(bundle, "train", "--max_epochs", "1", data=data)
    assert res.returncode == 0, output(res)[-3000:]
    return bundle


def test_retraining_with_other_settings_refuses_naming_them_and_resume_false_trains_anew(trained, data, tmp_path):
    models = trained / "models"
    before = {p.name: p.read_bytes() for p in models.glob("*.pt")}
    # other learning rate, seed and split: not the saved run, so it is not "resumed" into doing nothing
    res = run(trained, "train", "--max_epochs", "1", "--learning_rate", "0.01", "--seed", "1", "--split_seed", "2",
              data=data)
    assert res.returncode != 0
    err = last_lines(res, 1)[0]
    assert err.startswith("medclass: error: ") and "belongs to another training run" in err
    for key in ("learning_rate: 0.001 in the saved run, 0.01 now", "seed: 0 in the saved run, 1 now",
                "split_seed: 0 in the saved run, 2 now", "data (datalist content or split)", "--resume false"):
        assert key in err, key
    # the same settings again: the run is finished, said so instead of silently doing nothing
    res = run(trained, "train", "--max_epochs", "1", data=data)
    assert res.returncode != 0 and "this training run already finished after 1 epoch" in last_lines(res, 1)[0]
    assert {p.name: p.read_bytes() for p in models.glob("*.pt")} == before  # nothing touched

    # --resume false trains a new model and keeps the old best one (in a copy of the folder)
    copy = tmp_path / "models"
    shutil.copytree(models, copy)
    res = run(trained, "train", "--max_epochs", "1", "--learning_rate", "0.01", "--resume", "false",
              "--ckpt_dir", str(copy), "--log_dir", str(tmp_path / "runs"), data=data)
    assert res.returncode == 0, output(res)[-3000:]
    assert (copy / "model.previous.pt").read_bytes() == before["model.pt"]
    last = torch.load(copy / "last.pt", weights_only=True)
    assert last["finished"] is True and last["fingerprint"]["settings"]["learning_rate"] == 0.01
    assert (copy / "model.pt").read_bytes() != before["model.pt"]


def test_a_fresh_bundle_trains_whatever_another_folder_holds(trained, data, tmp_path):
    """The quick-start problem: a finished run in one folder never stops or hijacks a run in another."""
    res = run(trained, "train", "--max_epochs", "1", "--ckpt_dir", str(tmp_path / "models"), "--log_dir",
              str(tmp_path / "runs"), data=data)
    assert res.returncode == 0, output(res)[-3000:]
    assert torch.load(tmp_path / "models" / "last.pt", weights_only=True)["trainer"]["epoch"] == 1


def test_quickstart_writes_into_its_own_folder(data, tmp_path):
    watched = ("models", "eval", "runs", "inference", "data")
    before = {d: sorted(p.name for p in (BUNDLE / d).rglob("*")) if (BUNDLE / d).exists() else None
              for d in watched}
    e = env()
    e.update(MEDCLASS_SKIP_INSTALL="1", MEDCLASS_QUICKSTART_DIR=str(tmp_path / "qs"))
    cmd = ["bash", str(ROOT / "scripts" / "quickstart.sh"), "--max_epochs", "1", *TINY]
    for _ in range(2):  # a second quick start trains again instead of stopping at the finished run
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=e)
        assert res.returncode == 0, output(res)[-3000:]
    for f in ("models/model.pt", "models/last.pt", "models/model.previous.pt", "eval/metrics.json",
              "eval/predictions.csv", "data/phantoms/datalist.csv"):
        assert (tmp_path / "qs" / f).exists(), f
    assert "test mean AUC" in res.stdout
    after = {d: sorted(p.name for p in (BUNDLE / d).rglob("*")) if (BUNDLE / d).exists() else None for d in watched}
    assert after == before  # nothing written into the bundle


def test_inference_after_evaluation_leaves_the_evaluation_intact(trained, data):
    res = run(trained, "evaluate", data=data)
    assert res.returncode == 0, output(res)[-3000:]
    evaluated = (trained / "eval" / "predictions.csv").read_bytes()
    res = run(trained, "inference", "--input", str(data / "images"), data=data)
    assert res.returncode == 0, output(res)[-3000:]
    assert (trained / "eval" / "predictions.csv").read_bytes() == evaluated  # byte-identical
    predicted = trained / "inference" / "predictions.csv"
    rows = list(csv.DictReader(open(predicted)))
    assert len(rows) == len(list((data / "images").glob("*.png")))

    # `medclass report eval` still works on the evaluation folder
    res = subprocess.run([sys.executable, "-m", "medclass.cli", "report", str(trained / "eval"), "--no-html"],
                         capture_output=True, text=True, timeout=300, env=env())
    assert res.returncode == 0, output(res)[-3000:]

    # a failing inference leaves the previous predictions as they were, not an empty file
    kept = predicted.read_bytes()
    bad = trained / "bad.png"
    bad.write_bytes(b"not an image")
    res = run(trained, "inference", "--input", str(bad), data=data)
    assert res.returncode != 0 and str(bad) in last_lines(res, 1)[0]
    assert predicted.read_bytes() == kept
    assert not [p for p in predicted.parent.iterdir() if p.name.endswith(".tmp")]


def _image_folder(data: Path, dst: Path) -> tuple[list[Path], Path, Path]:
    from PIL import Image

    dst.mkdir()
    good = sorted((data / "images").glob("*.png"))[:5]
    for p in good:
        shutil.copy(p, dst / p.name)
    corrupt, blank = dst / "a_corrupt.png", dst / "b_blank.png"
    corrupt.write_bytes(good[0].read_bytes()[:80])  # truncated PNG
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(blank)
    return good, corrupt, blank


def test_unreadable_and_blank_images_stop_naming_them_or_are_skipped_and_listed(trained, data, tmp_path):
    good, corrupt, blank = _image_folder(data, tmp_path / "images")
    out = tmp_path / "pred"
    res = run(trained, "inference", "--input", str(tmp_path / "images"), "--output_dir", str(out), data=data)
    assert res.returncode != 0
    assert last_lines(res, 1)[0].startswith(f"medclass: error: {corrupt}: cannot read image")
    (tmp_path / "images" / corrupt.name).unlink()
    res = run(trained, "inference", "--input", str(tmp_path / "images"), "--output_dir", str(out), data=data)
    assert res.returncode != 0 and f"medclass: error: {blank}: blank image" in last_lines(res, 1)[0]
    assert not (out / "predictions.csv").exists()

    corrupt.write_bytes(good[0].read_bytes()[:80])
    res = run(trained, "inference", "--input", str(tmp_path / "images"), "--output_dir", str(out),
              "--skip_unreadable", "true", data=data)
    assert res.returncode == 0, output(res)[-3000:]
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert sorted(r["id"] for r in rows) == sorted(p.stem for p in good)
    skipped = {r["file"]: r["reason"] for r in csv.DictReader(open(out / "skipped.csv"))}
    assert set(skipped) == {str(corrupt), str(blank)}
    assert "cannot read image" in skipped[str(corrupt)] and "blank image" in skipped[str(blank)]
    assert "left out 2 of 7 images" in output(res)


def test_datalist_rows_whose_files_are_missing_stop_or_are_skipped_with_the_positives_lost(trained, data, tmp_path):
    rows = list(csv.DictReader(open(data / "datalist.csv")))
    gone = [r for r in rows if r["nodule"] == "1"][:3]
    for r in gone:  # the CSV names them, the disk does not have them (e.g. the full NIH CSV, a subset of images)
        r["image"] = r["image"].replace(".png", "_absent.png")
    listed = tmp_path / "labels.csv"
    with open(listed, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    model = tmp_path / "model.pt"
    shutil.copy(trained / "models" / "model.pt", model)
    args = ["--datalist", str(listed), "--model_path", str(model), "--output_dir", str(tmp_path / "ev")]
    res = run(trained, "evaluate", *args, data=data)
    assert res.returncode != 0 and "3 image file(s) not found" in last_lines(res, 1)[0]
    assert last_lines(res, 1)[0].endswith("check dataset_dir, or set missing_files: skip (--missing_files skip) to leave "
                                          "such rows out")
    res = run(trained, "evaluate", *args, "--missing_files", "skip", data=data)
    assert res.returncode == 0, output(res)[-3000:]
    skipped = list(csv.DictReader(open(tmp_path / "ev" / "skipped.csv")))
    assert sorted(r["file"] for r in skipped) == sorted(str(data / r["image"]) for r in gone)
    assert "left out 3 of 48 datalist rows" in output(res) and "positives lost per label: nodule 3" in output(res)


def test_a_second_training_in_the_same_folder_stops_at_once_and_the_first_finishes(data, tmp_path):
    bundle = bundle_copy(tmp_path / "b")
    first = subprocess.Popen(command(bundle, "train", *TINY, "--dataset_dir", str(data), "--progress_bar", "false",
                                     "--max_epochs", "40", "--early_stop_patience", "0"),
                             cwd=bundle, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env())
    try:
        info = bundle / "models" / ".medclass.lock.json"
        t0 = time.time()
        while not info.exists() and first.poll() is None and time.time() - t0 < 120:
            time.sleep(0.2)
        assert info.exists(), "the first training never took its folder"
        t1 = time.time()
        res = run(bundle, "train", "--max_epochs", "40", "--early_stop_patience", "0", data=data)
        took = time.time() - t1
        assert first.poll() is None, "the first training ended before the second one was checked"
        assert res.returncode != 0 and took < 60
        err = last_lines(res, 1)[0]
        assert f"models is in use by process {first.pid} (train) since " in err and "--ckpt_dir" in err
    finally:
        out, _ = first.communicate(timeout=600)
    assert first.returncode == 0, out[-3000:]
    last = torch.load(bundle / "models" / "last.pt", weights_only=True)
    assert last["finished"] is True and last["trainer"]["epoch"] == 40


def _can_mount_tmpfs() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-r", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(sys.platform != "linux" or not _can_mount_tmpfs(),
                    reason="needs unshare -r -m and a tmpfs mount (a real full disk)")
def test_a_full_disk_keeps_the_last_good_model_and_leaves_no_temporary_file(data, tmp_path):
    """The checkpoint folder on a 5 MB tmpfs: epoch 1's model.pt + last.pt (about 3.7 MB) fit, epoch 2's new
    last.pt does not (ENOSPC)."""
    bundle = bundle_copy(tmp_path / "b")
    disk, kept = tmp_path / "disk", tmp_path / "kept"
    disk.mkdir()
    train = " ".join(shlex.quote(a) for a in command(bundle, "train", *TINY, "--dataset_dir", str(data), "--progress_bar",
                                               "false", "--max_epochs", "3", "--early_stop_patience", "0",
                                               "--ckpt_dir", str(disk / "models")))
    script = (f"mount -t tmpfs -o size=5m tmpfs '{disk}' && cd '{bundle}' && {train} > '{tmp_path}/out.txt' 2>&1; "
              f"echo $? > '{tmp_path}/rc'; cp -a '{disk}/models' '{kept}'")
    subprocess.run(["unshare", "-r", "-m", "sh", "-c", script], env=env(), timeout=600, check=True)
    text = (tmp_path / "out.txt").read_text()
    assert int((tmp_path / "rc").read_text()) != 0, text[-3000:]
    err = [ln for ln in text.splitlines() if ln.strip()][-1]
    assert err.startswith(f"medclass: error: {disk / 'models'}: no space left on the disk while writing last.pt (")
    assert "last.pt was not changed" in err
    assert sorted(p.name for p in kept.iterdir() if not p.name.startswith(".medclass")) == [
        "last.pt", "model.pt", "plan.json", "split.csv"]  # the recipe and split of the run, written before training
    last = torch.load(kept / "last.pt", weights_only=True)
    assert last["trainer"]["epoch"] == 1  # the last good one
    torch.load(kept / "model.pt", weights_only=True)


def test_logging_conf_may_not_write_into_models(trained, data, tmp_path):
    bundle = bundle_copy(tmp_path / "b")
    (bundle / "models").mkdir()
    model = bundle / "models" / "model.pt"
    shutil.copy(trained / "models" / "model.pt", model)
    conf = bundle / "configs" / "logging.conf"
    text = conf.read_text().replace("keys=consoleHandler", "keys=consoleHandler,fileHandler")
    text = text.replace("handlers=consoleHandler\n", "handlers=consoleHandler,fileHandler\n")
    conf.write_text(text + "\n[handler_fileHandler]\nclass=FileHandler\nlevel=INFO\nformatter=fullFormatter\n"
                           "args=('models/model.pt', 'w')\n")
    before = model.read_bytes()
    res = run(bundle, "inference", "--input", str(data / "images"), runner="medclass", data=data)
    assert res.returncode != 0
    assert last_lines(res, 2)[0] == ("medclass: error: configs/logging.conf [handler_fileHandler] writes to models/model.pt, which "
                                     "is not a log file; logging may only write files ending in .log or .txt (e.g. "
                                     "logs/run.log)")
    assert model.read_bytes() == before
    # a log file is fine
    conf.write_text(conf.read_text().replace("args=('models/model.pt', 'w')", "args=('logs/run.log', 'a')"))
    res = run(bundle, "inference", "--input", str(data / "images"), runner="medclass", data=data)
    assert res.returncode == 0, output(res)[-3000:]
    assert "predictions written to" in (bundle / "logs" / "run.log").read_text()


@pytest.mark.parametrize("args, message", [
    (["--max_epochs", "ten"], "medclass: error: setting max_epochs: expected a whole number >= 1, got 'ten'; set it "
                              "in configs/common.yaml or on the command line, e.g. --max_epochs 12"),
    (["--arch", "resnet9"], f"medclass: error: setting arch: expected one of {', '.join(ARCHS)}, got 'resnet9'"),
    (["--datalist", "missing.csv"], "medclass: error: setting datalist: missing.csv does not exist"),
], ids=["wrong-type", "unknown-arch", "missing-file"])
def test_a_setting_mistake_ends_in_one_short_error(trained, data, args, message):
    res = run(trained, "train", "--max_epochs", "1", *args, runner="medclass", data=data)
    assert res.returncode == 1
    first, hint = last_lines(res, 2)
    assert first.startswith(message)
    assert hint.startswith("(full traceback in ") and "medclass-error.log; add --debug to print it)" in hint
    assert "Traceback" not in output(res) and len(res.stderr.splitlines()) <= 4
    assert "Traceback (most recent call last)" in Path(hint[len("(full traceback in "):].split(";")[0]).read_text()


def test_monai_bundle_run_ends_with_the_same_short_error(trained, data):
    res = run(trained, "train", "--max_epochs", "ten", data=data)
    assert res.returncode != 0
    assert last_lines(res, 1)[0].startswith("medclass: error: setting max_epochs: expected a whole number >= 1")


def test_ctrl_c_stops_with_one_line_and_the_same_command_resumes_with_continuing_steps(data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    bundle = bundle_copy(tmp_path / "b")
    cmd = command(bundle, "train", *TINY, "--dataset_dir", str(data), "--progress_bar", "false", "--max_epochs", "6",
                  "--early_stop_patience", "0", runner="medclass")
    proc = subprocess.Popen(cmd, cwd=bundle, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    t0 = time.time()
    while not (bundle / "models" / "last.pt").exists() and proc.poll() is None and time.time() - t0 < 120:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-2000:] + err[-2000:]
    epoch = torch.load(bundle / "models" / "last.pt", weights_only=True)["trainer"]["epoch"]
    assert 1 <= epoch < 6
    assert err.strip().splitlines()[-1] == (
        f"medclass: stopped by Ctrl-C during epoch {epoch + 1}: models/last.pt holds epoch {epoch} (best model "
        "models/model.pt); run the same command again to resume from there.")
    assert not [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("Loading dataset")][:-1]
    assert "Traceback" not in out + err
    # what the stopped run wrote of the epoch in progress (its writer may not have flushed it): TensorBoard must
    # show the resumed run's values for these steps, not these
    iterations = int(torch.load(bundle / "models" / "last.pt", weights_only=True)["trainer"]["iteration"]) // epoch
    with SummaryWriter(log_dir=str(bundle / "runs" / "train")) as partial:
        for step in range(epoch * iterations + 1, (epoch + 1) * iterations + 1):
            partial.add_scalar("train_loss", -1.0, step)
    with SummaryWriter(log_dir=str(bundle / "runs" / "validation")) as partial:
        partial.add_scalar("val_mean_auc", -1.0, epoch + 1)

    res = subprocess.run(cmd, cwd=bundle, capture_output=True, text=True, timeout=300, env=env())
    assert res.returncode == 0, output(res)[-3000:]
    assert f"resumed from models/last.pt at epoch {epoch} of 6" in output(res)
    assert torch.load(bundle / "models" / "last.pt", weights_only=True)["finished"] is True
    values = {}
    for part in ("train", "validation"):  # as TensorBoard reads each run folder: every event file, with purges
        acc = EventAccumulator(str(bundle / "runs" / part))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            values[tag] = {e.step: e.value for e in acc.Scalars(tag)}
            assert len(values[tag]) == len(acc.Scalars(tag)), f"{tag}: a step shows twice"
    assert sorted(values["val_mean_auc"]) == list(range(1, 7))  # every epoch once, the resumed ones continuing
    assert sorted(values["train_loss"]) == list(range(1, 6 * iterations + 1))
    assert min(values["train_loss"].values()) >= 0 and min(values["val_mean_auc"].values()) >= 0


def test_csv_datalists_in_utf8_bom_and_latin1_are_read_and_utf16_is_named(tmp_path):
    text = "image,Pneumonía,patient_id\n" + "".join(f"img{i}.png,{i % 2},José{i}\n" for i in range(12))
    for name, raw in (("utf8.csv", text.encode("utf-8")), ("bom.csv", b"\xef\xbb\xbf" + text.encode("utf-8")),
                      ("latin1.csv", text.encode("latin-1"))):
        (tmp_path / name).write_bytes(raw)
        res = subprocess.run([sys.executable, "-m", "medclass.cli", "split", str(tmp_path / name), "--labels",
                              "Pneumonía", "--no-check-files"], capture_output=True, text=True, timeout=120, env=env())
        assert res.returncode == 0, name + output(res)[-2000:]
        report = json.loads(res.stdout)
        assert report["training"]["images"] == 8 and report["training"]["labels"]["Pneumonía"]["positives"] == 4
    (tmp_path / "utf16.csv").write_bytes(text.encode("utf-16-le"))
    res = subprocess.run([sys.executable, "-m", "medclass.cli", "split", str(tmp_path / "utf16.csv"), "--labels",
                          "Pneumonía", "--no-check-files"], capture_output=True, text=True, timeout=120, env=env())
    assert res.returncode == 2
    assert res.stderr.strip().endswith("UTF-16 or UTF-32 text without a byte-order mark does; save it as UTF-8 (e.g. "
                                       "'CSV UTF-8' in a spreadsheet)")

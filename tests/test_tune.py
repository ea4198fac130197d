"""``medclass tune`` (issue 21): search-space checks, pruning, one study shared by workers in separate processes,
never tuning on the test split, and ``--write-best`` picked up by the next training."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

optuna = pytest.importorskip("optuna", reason="medclass tune needs optuna: pip install -e '.[tune]'")

from ignite.engine import Engine, Events  # noqa: E402

from medclass.errors import SettingError  # noqa: E402
from medclass.tuning.space import load_space, parse_space  # noqa: E402
from medclass.tuning.storage import open_storage, open_study, trials_table  # noqa: E402
from medclass.tuning.trials import TrialReporter, check_validation_not_test  # noqa: E402
from medclass.tuning.writeback import MARK, set_values  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "cxr_classification"
VALUES = yaml.safe_load((BUNDLE / "configs" / "common.yaml").read_text())
# tiny trials: 32 px phantoms, width 4, 2 epochs, one thread
TINY = ["--image_size", "[32,32]", "--width", "4", "--batch_size", "8", "--max_epochs", "2", "--num_threads", "1",
        "--phantoms", "{n: 40, size: 32, seed: 1}"]
SPACE = {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
         "augment.rotate_deg": {"type": "float", "low": 0.0, "high": 15.0}}


def _space_file(tmp: Path, space: dict) -> Path:
    path = tmp / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    """The tiny phantom set, made once (workers started together must not race to make it)."""
    from medclass.data import ensure_phantoms

    folder = tmp_path_factory.mktemp("phantoms")
    ensure_phantoms(folder, n=40, size=32, seed=1)
    return folder


# ------------------------------------------------------------------------------------------------ search space
@pytest.mark.parametrize("space, error", [
    ({"learning_rat": {"type": "float", "low": 1e-4, "high": 1e-2}}, r"learning_rat: not a setting medclass tune"),
    ({"learning_rate": {"type": "float", "low": 1e-2, "high": 1e-4}}, r"learning_rate: low 0.01 must be below high"),
    ({"learning_rate": {"type": "float", "low": 0.0, "high": 1e-2, "log": True}}, r"log range needs low > 0"),
    ({"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "lo": 1}}, r"unknown key\(s\) \['lo'\]"),
    ({"learning_rate": {"type": "normal", "low": 1e-4, "high": 1e-2}}, r"type must be one of"),
    ({"label_smoothing": {"type": "float", "low": 0.0, "high": 1.5}}, r"label_smoothing: high 1.5 is not a value"),
    ({"batch_size": {"type": "categorical", "choices": [16, "$32 * 2"]}}, r"batch_size: holds '\$'"),
    ({"batch_size": {"type": "categorical", "choices": ["@batch_size"]}}, r"batch_size: holds '@'"),
    ({"arch": {"type": "categorical", "choices": [{"_target_": "os.system"}]}}, r"arch: has the key '_target_'"),
    ({"batch_size": {"type": "categorical", "choices": [16, 16]}}, r"repeat a value"),
    ({"width": {"type": "int", "low": 8, "high": 32.5}}, r"width: high must be a whole number"),
    ({"augment.rotation": {"type": "float", "low": 0, "high": 5}}, r"only augment.<option>"),
    ({"augment.zoom": {"type": "float", "low": 0, "high": 5}}, r"augment.zoom: high 5 is not a number in \[0.0, 1.0\]"),
    ({"num_threads": {"type": "int", "low": 1, "high": 4}}, r"num_threads: not a setting medclass tune searches"),
    ({"seed": {"type": "int", "low": 0, "high": 9}}, r"seed: not a setting medclass tune searches"),
], ids=lambda v: "" if isinstance(v, str) else next(iter(v)))
def test_search_space_errors_name_the_file_and_setting(tmp_path, space, error):
    path = _space_file(tmp_path, space)
    with pytest.raises(SettingError, match=error) as info:
        load_space(path, VALUES)
    assert str(path) in str(info.value)


def test_search_space_keys_must_be_bundle_values_and_augment_a_mapping():
    with pytest.raises(SettingError, match=r"common.yaml has no 'hidden_size'"):
        parse_space({"hidden_size": {"type": "int", "low": 64, "high": 128}}, "t.yaml", {"learning_rate": 0.001})
    with pytest.raises(SettingError, match=r"augment is False, not a mapping"):
        parse_space({"augment.zoom": {"type": "float", "low": 0, "high": 0.2}}, "t.yaml", {"augment": False})


def test_search_space_values_become_settings():
    space = parse_space({**SPACE, "augment.zoom": {"type": "float", "low": 0.0, "high": 0.2},
                         "batch_size": {"type": "categorical", "choices": [8, 16]}}, "t.yaml", VALUES)
    settings = space.overrides({"learning_rate": 0.003, "augment.rotate_deg": 4.0, "augment.zoom": 0.1,
                                "batch_size": 16}, {"augment": {"flip_prob": 0.0}})
    assert settings == {"learning_rate": 0.003, "augment": {"flip_prob": 0.0, "rotate_deg": 4.0, "zoom": 0.1},
                        "batch_size": 16}
    # `augment: auto` (the bundles' default): the options the plan chooses for the dimensions, with the searched ones
    for dims, planned in ((2, {}), (3, {"rotate_deg": 10, "zoom": 0.1, "translate": 0.05})):
        got = space.overrides({"augment.zoom": 0.15}, {"augment": "auto", "spatial_dims": dims})
        assert got == {"augment": {**planned, "zoom": 0.15}}
    assert parse_space({"augment.zoom": {"type": "float", "low": 0, "high": 0.2}}, "t.yaml", {"augment": "auto"})
    trial = optuna.trial.FixedTrial({"learning_rate": 0.002, "augment.rotate_deg": 1.0, "augment.zoom": 0.05,
                                     "batch_size": 8})
    assert space.suggest(trial)["batch_size"] == 8
    for name in ("test_split", "split_fractions", "split_seed", "datalist", "split_file", "items"):
        with pytest.raises(SettingError, match="test split" if name != "test_split" else "not a setting"):
            parse_space({name: {"type": "categorical", "choices": [0, 1]}}, "t.yaml")


def test_the_bundles_search_spaces_are_valid():
    for bundle in sorted((ROOT / "bundles").glob("*/configs/tune.yaml")):
        values = yaml.safe_load((bundle.parent / "common.yaml").read_text())
        assert "learning_rate" in load_space(bundle, values).names()


# ----------------------------------------------------------------------------------------------------- pruning
class StubTrial:
    """A trial whose pruner stops it at ``prune_at``."""

    number = 7

    def __init__(self, prune_at: int | None) -> None:
        self.prune_at, self.reported = prune_at, []

    def report(self, value, step):
        self.reported.append((step, value))

    def should_prune(self):
        return self.prune_at is not None and self.reported[-1][0] >= self.prune_at


def test_reporter_raises_trial_pruned_when_the_pruner_says_so():
    reporter = TrialReporter(StubTrial(prune_at=2), metric="val_mean_auc")
    reporter.report(1, 0.6)
    reporter.report(1, math.nan)  # not a finite AUC: not reported
    with pytest.raises(optuna.TrialPruned, match="pruned at epoch 2"):
        reporter.report(2, 0.55)
    assert reporter.trial.reported == [(1, 0.6), (2, 0.55)] and reporter.best == 0.6


def test_reporter_stops_the_trainer_after_the_pruned_validation():
    """Attached to ignite engines: the trainer stops after epoch 3's validation, the exception kept for later."""
    trainer, evaluator = Engine(lambda e, b: None), Engine(lambda e, b: None)
    aucs = {1: 0.5, 2: 0.7, 3: 0.6, 4: 0.9}

    @evaluator.on(Events.EPOCH_COMPLETED)
    def metric(engine):
        engine.state.metrics["val_mean_auc"] = aucs[trainer.state.epoch]

    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: evaluator.run([0]))
    reporter = TrialReporter(StubTrial(prune_at=3))
    reporter.attach(trainer, evaluator)
    trainer.run([0, 1], max_epochs=4)
    assert trainer.state.epoch == 3
    assert isinstance(reporter.pruned, optuna.TrialPruned) and reporter.metric == "val_mean_auc"
    assert reporter.values == {1: 0.5, 2: 0.7, 3: 0.6} and reporter.best == 0.7

    unpruned = TrialReporter(StubTrial(prune_at=None))
    trainer2, evaluator2 = Engine(lambda e, b: None), Engine(lambda e, b: None)
    evaluator2.add_event_handler(Events.EPOCH_COMPLETED,
                                 lambda e: e.state.metrics.update(val_mean_auc=aucs[trainer2.state.epoch]))
    trainer2.add_event_handler(Events.EPOCH_COMPLETED, lambda e: evaluator2.run([0]))
    unpruned.attach(trainer2, evaluator2)
    trainer2.run([0], max_epochs=4)
    assert trainer2.state.epoch == 4 and unpruned.pruned is None and unpruned.best == 0.9


# ------------------------------------------------------------------------------------------ the test split
def _item(i, patient=None, image=None):
    return {"id": f"img{i}", "image": image or f"/data/img{i}.png", "patient_id": patient or f"p{i}",
            "label": np.zeros(1, dtype=np.float32)}


def test_validation_sharing_images_or_patients_with_test_is_refused():
    val, test = [_item(0), _item(1)], [_item(2), _item(3)]
    check_validation_not_test(val, test)
    with pytest.raises(SettingError, match="share 1 image ids with the test split"):
        check_validation_not_test(val, [*test, _item(1)])
    with pytest.raises(SettingError, match="share 1 image files"):
        check_validation_not_test(val, [_item(5, image="/data/img0.png")])
    with pytest.raises(SettingError, match="share 1 patients.*--resplit true"):
        check_validation_not_test(val, [_item(6, patient="p1")])
    with pytest.raises(SettingError, match="validation split is empty"):
        check_validation_not_test([], test)


def _tune(*args: str) -> int:
    from medclass.cli import main

    return main(["tune", *map(str, args)])


def test_tune_refuses_a_search_that_reads_the_test_split(tmp_path, phantoms, capsys):
    # a search over a split setting is refused before anything runs
    bad = _space_file(tmp_path, {**SPACE, "split_seed": {"type": "int", "low": 0, "high": 3}})
    storage = f"journal:{tmp_path / 'study.journal'}"
    assert _tune(BUNDLE, "--space", bad, "--storage", storage, "--workdir", tmp_path / "w", "--trials", 1,
                 "--dataset_dir", phantoms, *TINY) == 1
    assert "split_seed: decides which images are in the training, validation and test splits" in capsys.readouterr().err
    # a datalist whose validation images are also its test images: refused before the study starts
    from medclass.data import Datalist, load_datalist

    data = load_datalist(phantoms / "datalist.csv", dataset_dir=phantoms)
    items = data.all_items()
    copies = [{**it, "id": it["id"] + "_again"} for it in items[30:]]
    leaky = Datalist({"training": items[:30], "validation": items[30:], "test": copies}, data.label_names, data.task)
    leaky.to_json(tmp_path / "leaky.json")
    assert _tune(BUNDLE, "--space", _space_file(tmp_path, SPACE), "--storage", storage, "--workdir", tmp_path / "w",
                 "--trials", 1, "--dataset_dir", phantoms, *TINY, "--datalist", tmp_path / "leaky.json") == 1
    err = capsys.readouterr().err
    assert "share 10 image files with the test split" in err and "never reads the test split" in err
    assert not (tmp_path / "w").exists() and not (tmp_path / "study.journal").exists()  # no study, no trial
    # settings the trials set themselves
    assert _tune(BUNDLE, "--space", _space_file(tmp_path, SPACE), "--workdir", tmp_path / "w",
                 "--items", "$@data.splits['test']") == 1
    assert "--items: medclass tune sets it for every trial" in capsys.readouterr().err


def test_command_line_options_and_fixed_settings(tmp_path, capsys):
    from medclass.cli import main

    with pytest.raises(SystemExit) as info:
        main(["tune", "--help"])
    assert info.value.code == 0 and "--write-best" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "tune" in capsys.readouterr().out
    # --learning_rate is a fixed bundle setting (not an abbreviation of a tune option), here clashing with the space
    assert _tune(BUNDLE, "--space", _space_file(tmp_path, SPACE), "--trials=0", "--learning_rate", "0.1",
                 "--storage", f"journal:{tmp_path / 's.journal'}") == 1
    assert "--learning_rate is given as a fixed setting and searched" in capsys.readouterr().err


def test_a_trial_never_trains_into_an_existing_folder(tmp_path, phantoms, capsys):
    (tmp_path / "w" / "trial_0000" / "models").mkdir(parents=True)
    (tmp_path / "w" / "trial_0000" / "models" / "model.pt").write_bytes(b"an earlier study's model")
    storage = f"journal:{tmp_path / 's.journal'}"
    assert _tune(BUNDLE, "--space", _space_file(tmp_path, SPACE), "--storage", storage, "--workdir", tmp_path / "w",
                 "--trials", 1, "--dataset_dir", phantoms, *TINY) == 1
    assert "trial_0000 already exists" in capsys.readouterr().err
    assert (tmp_path / "w" / "trial_0000" / "models" / "model.pt").read_bytes() == b"an earlier study's model"
    study = optuna.load_study(study_name=BUNDLE.name, storage=open_storage(storage))
    assert [t.state.name for t in study.trials] == ["FAIL"]  # recorded as failed, nothing overwritten


# ----------------------------------------------------------------------------------------------------- storage
def test_storage_urls(tmp_path):
    with pytest.raises(SettingError, match="give a database URL"):
        open_storage(tmp_path / "study.db")
    journal = open_storage(f"journal:{tmp_path / 'a' / 'study.journal'}")
    assert isinstance(journal, optuna.storages.JournalStorage)
    rdb = open_storage(f"sqlite:///{tmp_path / 'b' / 'study.db'}")
    assert isinstance(rdb, optuna.storages.RDBStorage)
    record = {"space": {"x": 1}, "fixed": {}, "metric": "val_mean_auc"}
    study = open_study(rdb, "s", record)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert len(open_study(rdb, "s", record).trials) == 2  # joined, not replaced
    with pytest.raises(SettingError, match="another search space"):
        open_study(rdb, "s", {**record, "space": {"x": 2}})
    table = trials_table(study.trials, ["x"])
    assert len(table.splitlines()) == 3 and "COMPLETE" in table and "*" in table


WORKER = """
import sys
from medclass.tuning.storage import open_storage, open_study
study = open_study(open_storage(sys.argv[1]), "stub", {"space": {}, "fixed": {}, "metric": "m"})
study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=int(sys.argv[2]))
"""


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_worker_processes_started_together_share_one_study(tmp_path, kind):
    """Three processes started at once on a new storage (racing to create it), 5 trials each: 15 trials, none lost.
    Journal file: Optuna's choice for one machine or a shared folder; SQLite: a few local workers."""
    url = f"journal:{tmp_path / 'study.journal'}" if kind == "journal" else f"sqlite:///{tmp_path / 'study.db'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, url, "5"], env=env, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    trials = optuna.load_study(study_name="stub", storage=open_storage(url)).trials
    assert sorted(t.number for t in trials) == list(range(15))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)


# --------------------------------------------------------------------------- real trials through the bundle
@pytest.mark.slow  # a second process importing torch + MONAI, 4 tiny trainings: 15-35 s on 2 busy cores
def test_two_tune_workers_in_separate_processes_share_one_study(tmp_path, phantoms, capsys):
    """Two `medclass tune` workers, 2 real trials each (the bundle's train workflow, tiny), one SQLite study: one in
    a child process, the other in this process, started while the child trains its first trial."""
    space = _space_file(tmp_path, SPACE)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = [BUNDLE, "--space", space, "--storage", storage, "--study", "shared", "--workdir", tmp_path / "work",
            "--trials", 2, "--prune-startup", 1, "--dataset_dir", phantoms, *TINY]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-m", "medclass.cli", "tune", *map(str, args), "--sampler-seed", "1"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        while not (tmp_path / "work" / "trial_0000").exists() and child.poll() is None:
            time.sleep(0.2)
        assert _tune(*args, "--sampler-seed", 2) == 0
        outs = [child.communicate(timeout=300)[0], capsys.readouterr().out]
    finally:
        child.kill()
    assert child.returncode == 0, outs[0][-3000:]
    study = optuna.load_study(study_name="shared", storage=storage)
    trials = study.trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]  # 2 + 2: none lost, none run twice
    states = {t.state for t in trials}
    assert states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}, states
    assert optuna.trial.TrialState.COMPLETE in states
    folders = sorted(p.name for p in (tmp_path / "work").glob("trial_*"))
    assert folders == ["trial_0000", "trial_0001", "trial_0002", "trial_0003"]
    for t in trials:  # each trial trained its own settings into its own folder
        folder = Path(t.user_attrs["folder"])
        record = json.loads((folder / "trial.json").read_text())
        assert record["settings"]["learning_rate"] == t.params["learning_rate"]
        assert record["settings"]["ckpt_dir"] == str(folder / "models")
        assert (folder / "models" / "model.pt").is_file() and (folder / "train.log").is_file()
        assert 1 <= len(t.intermediate_values) <= 2
    assert not (BUNDLE / "tune").exists()
    assert all("best: trial" in out and "test split is not read" in out for out in outs)


def test_write_best_values_are_used_by_the_next_training(tmp_path, phantoms, capsys):
    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLE / "configs", bundle / "configs")
    (bundle / "configs" / "tune.yaml").write_text(yaml.safe_dump(SPACE))
    storage = f"journal:{tmp_path / 'study.journal'}"
    common = bundle / "configs" / "common.yaml"
    before = common.read_text()
    assert _tune(bundle, "--storage", storage, "--study", "wb", "--workdir", tmp_path / "w", "--trials", 1,
                 "--dataset_dir", phantoms, *TINY) == 0
    assert common.read_text() == before  # only --write-best writes
    # a later command writes the best: without the trials' fixed settings, nor any trial of its own
    assert _tune(bundle, "--storage", storage, "--study", "wb", "--trials", 0, "--write-best") == 0
    out = capsys.readouterr().out
    best = optuna.load_study(study_name="wb", storage=open_storage(storage)).best_trial
    lr, rotate = best.params["learning_rate"], best.params["augment.rotate_deg"]
    assert f"learning_rate: auto -> {lr!r}" in out and "augment: auto -> {rotate_deg: " in out
    text = common.read_text()
    assert f"{MARK} study 'wb' trial 0, val_mean_auc {best.value:.4f}, was auto" in text
    assert yaml.safe_load(text) == {**yaml.safe_load(before), "learning_rate": lr, "augment": {"rotate_deg": rotate}}
    assert "# base width (resnet)" in text  # the other lines and their comments are kept

    # the next training (no command-line values) trains with them: the workflows were synced
    from monai.bundle import ConfigWorkflow

    from medclass import bundle_tools as bt

    assert bt.sync_bundle(bundle, check=True) == []
    wf = ConfigWorkflow(config_file=bt.config_files(bundle, "train.yaml"), workflow_type="train",
                        bundle_root=str(bundle), dataset_dir=str(phantoms), ckpt_dir=str(tmp_path / "m"),
                        log_dir=str(tmp_path / "runs"), image_size=[32, 32], width=4)
    wf.initialize()  # stops when common.yaml changed after its copy into inference.yaml
    assert wf.parser.get_parsed_content("optimizer").param_groups[0]["lr"] == pytest.approx(lr)
    assert wf.parser.get_parsed_content("augment") == {"rotate_deg": rotate}


def test_set_values_keeps_comments_and_does_not_stack_notes():
    text = "a: 1   # the a\nlist: [1, 2]\nb: {}\n"
    once = set_values(text, {"a": 2.5, "b": {"zoom": 0.1}}, "study 's' trial 1")
    assert once.splitlines() == [f"{MARK} study 's' trial 1, was 1", "a: 2.5  # the a", "list: [1, 2]",
                                 f"{MARK} study 's' trial 1, was {{}}", "b: {zoom: 0.1}"]
    twice = set_values(once, {"a": 3}, "study 's' trial 2")
    # the note replaced, not stacked; the comment keeps its column
    assert twice.count(MARK) == 2 and f"{MARK} study 's' trial 2, was 2.5\na: 3    # the a" in twice
    with pytest.raises(SettingError, match="spans several lines"):
        set_values("a:\n  - 1\n  - 2\n", {"a": [3]}, "x")


def test_a_failed_trial_is_recorded_and_the_worker_goes_on(tmp_path, phantoms, capsys, monkeypatch):
    import medclass.tuning.trials as trials

    calls = []

    def training(bundle, settings, reporter=None, on_built=None):  # trial 0 diverges, trial 1 validates
        calls.append(settings)
        if len(calls) == 1:
            raise FloatingPointError("5 consecutive non-finite steps")
        reporter.report(1, 0.75)

    monkeypatch.setattr(trials, "run_training", training)
    storage = f"journal:{tmp_path / 's.journal'}"
    assert _tune(BUNDLE, "--space", _space_file(tmp_path, SPACE), "--storage", storage, "--workdir", tmp_path / "w",
                 "--trials", 2, "--dataset_dir", phantoms, *TINY) == 0
    study = optuna.load_study(study_name=BUNDLE.name, storage=open_storage(storage))
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"] and study.best_value == 0.75
    assert "non-finite" in (tmp_path / "w" / "trial_0000" / "error.log").read_text()
    out = capsys.readouterr().out
    assert "trial 0: FAIL" in out and "trial 1: COMPLETE" in out


def test_a_setting_error_in_a_trial_stops_the_worker(tmp_path, phantoms, capsys, monkeypatch):
    import medclass.tuning.trials as trials

    calls = []

    def training(bundle, settings, reporter=None, on_built=None):
        calls.append(settings)
        raise SettingError("--datalist: no such file")

    monkeypatch.setattr(trials, "run_training", training)
    storage = f"journal:{tmp_path / 's.journal'}"
    assert _tune(BUNDLE, "--space", _space_file(tmp_path, SPACE), "--storage", storage, "--workdir", tmp_path / "w",
                 "--trials", 3, "--dataset_dir", phantoms, *TINY) == 1
    assert len(calls) == 1 and "no such file" in capsys.readouterr().err

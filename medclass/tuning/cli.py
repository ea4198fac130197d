"""``medclass tune BUNDLE [options] [--KEY VALUE ...]``: search a bundle's training recipe with Optuna.

Each trial trains the bundle's ``train`` workflow with the settings the sampler (TPE) draws from the search space
(``BUNDLE/configs/tune.yaml``, or ``--space FILE``) over the fixed ``--KEY VALUE`` settings, in its own folder
(``WORKDIR/trial_000N``); the validation mean AUC of every epoch goes to the study, whose median pruner stops
trials that fall behind. The objective is a trial's best validation AUC: the test split is never read (the study
stops before training when validation and test share an image or a patient). Workers started with the same
``--storage`` and ``--study`` (on one machine, or on several with a database server) add their trials to one study.
``--write-best`` writes the best trial's settings into ``BUNDLE/configs/common.yaml``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path
from typing import Any

import optuna
import yaml

from medclass.bundle_tools import VALUES
from medclass.errors import SettingError, user_message
from medclass.plan import is_auto
from medclass.run_cli import parse_overrides
from medclass.runs import jsonable
from medclass.tuning.space import load_space, parse_space
from medclass.tuning.storage import STUDY_ATTR, open_storage, open_study, trials_table
from medclass.tuning.trials import METRIC, TUNE_SETS, TrialFailed, TrialObjective, preflight
from medclass.tuning.writeback import write_best

__all__ = ["main", "build_parser"]

logger = logging.getLogger(__name__)

#: fixed settings that may differ between the workers of one study: where this machine keeps the data and caches
#: and how it loads them (another machine mounts the same data elsewhere); every other fixed setting must agree
MACHINE_LOCAL = ("dataset_dir", "datalist", "split_file", "cache", "cache_dir", "memory_budget", "num_workers",
                 "num_threads", "loader", "progress_bar", "device")
_FLAGS = ("--write-best", "--verbose", "--debug", "-h", "--help")
_VALUED = ("--trials", "--storage", "--study", "--workdir", "--space", "--pruner", "--prune-startup",
           "--prune-warmup", "--sampler-seed", "--timeout")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medclass tune", description=__doc__.split("\n\n")[0],
                                allow_abbrev=False,
                                epilog="Any other --KEY VALUE is a bundle setting every trial gets, as in medclass "
                                       "run (e.g. --max_epochs 5 --datalist labels.csv).")
    p.add_argument("bundle", type=Path, help="the bundle folder (configs/common.yaml, configs/tune.yaml)")
    p.add_argument("--trials", type=int, default=10, help="trials this worker runs (default 10; 0: only print the "
                                                          "study, or --write-best)")
    p.add_argument("--storage", default=None,
                   help="the study's storage: sqlite:///study.db, postgresql://user:password@host/db (workers on "
                        "several machines) or journal:FILE (several processes on one machine or a shared folder); "
                        "default journal:WORKDIR/study.journal")
    p.add_argument("--study", default=None, help="study name (default: the bundle folder's name)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="trial folders trial_000N/ (models/, runs/, train.log, trial.json); default BUNDLE/tune/STUDY")
    p.add_argument("--space", type=Path, default=None, help="search space (default BUNDLE/configs/tune.yaml)")
    p.add_argument("--write-best", action="store_true",
                   help="write the best trial's settings into BUNDLE/configs/common.yaml (saying what changed) and "
                        "sync the bundle's workflows")
    p.add_argument("--pruner", choices=("median", "none"), default="median",
                   help="median (default): stop a trial whose validation AUC is below the median of earlier trials "
                        "at the same epoch; none")
    p.add_argument("--prune-startup", type=int, default=5, help="trials finished before pruning starts (default 5)")
    p.add_argument("--prune-warmup", type=int, default=1,
                   help="a trial is never pruned in its first N epochs (default 1)")
    p.add_argument("--sampler-seed", type=int, default=None,
                   help="seed of this worker's sampler (default random; give each worker its own)")
    p.add_argument("--timeout", type=float, default=None, help="stop starting trials after this many seconds")
    p.add_argument("--verbose", action="store_true", help="print the trials' training logs (always in train.log)")
    p.add_argument("--debug", action="store_true", help="print the traceback of an error")
    return p


def _split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """medclass tune's own options, and the ``--KEY VALUE`` settings (``--max_epochs 2``) for
    :func:`parse_overrides`."""
    mine, rest = [], []
    i = 0
    while i < len(argv):
        a = argv[i]
        name = a.split("=", 1)[0]
        if name in _FLAGS or not a.startswith("-"):
            mine.append(a)
            i += 1
        elif name in _VALUED:
            take = 1 if "=" in a else 2
            mine += argv[i:i + take]
            i += take
        else:
            take = 1 if "=" in a else 2
            rest += argv[i:i + take]
            i += take
    return mine, rest


def _pruner(args):
    if args.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=args.prune_startup, n_warmup_steps=args.prune_warmup + 1)


def _print_trial(study, trial) -> None:
    value = "" if trial.value is None else f" {METRIC} {trial.value:.4f}"
    epochs = len(trial.intermediate_values)
    print(f"trial {trial.number}: {trial.state.name}{value} after {epochs} epoch(s) {trial.params}", flush=True)


def tune(args, fixed: dict[str, Any]) -> int:
    bundle = args.bundle.resolve()
    common = bundle / "configs" / VALUES
    if not common.is_file():
        raise FileNotFoundError(f"{common} not found: give a medclass bundle folder (e.g. bundles/cxr_classification)")
    values = yaml.safe_load(common.read_text(encoding="utf-8")) or {}
    refused = sorted(set(fixed) & set(TUNE_SETS))
    if refused:
        raise SettingError(f"--{refused[0]}: medclass tune sets it for every trial (each trains into its own folder "
                           "under --workdir, validating on the validation split); leave it out")
    space = load_space(args.space or bundle / "configs" / "tune.yaml", values)
    both = sorted({n.split(".", 1)[0] for n in space.names() if "." not in n} & set(fixed))
    if both:
        raise SettingError(f"--{both[0]} is given as a fixed setting and searched in {space.source}; give it once")
    base = {**values, **fixed}
    if (any(n.startswith("augment.") for n in space.names()) and not isinstance(base.get("augment"), dict)
            and not is_auto(base.get("augment"))):
        raise SettingError(f"{space.source}: searches augment options but augment is {base.get('augment')!r}; give "
                           "augment as a mapping (e.g. --augment \"{}\") to tune its options")
    name = args.study or bundle.name
    workdir = (args.workdir or bundle / "tune" / name).resolve()
    storage_url = args.storage or f"journal:{workdir / 'study.journal'}"
    objective = TrialObjective(bundle, space, fixed, base, workdir, verbose=args.verbose)
    if args.trials > 0:
        sizes = preflight(bundle, objective.settings({}, workdir / "preflight"))
        print(f"data: {sizes} (trials select on validation; the test split is not read)", flush=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    shared = {k: v for k, v in fixed.items() if k not in MACHINE_LOCAL}
    record = jsonable({"bundle": bundle.name, "space": space.as_dict(), "fixed": shared, "metric": METRIC})
    sampler = optuna.samplers.TPESampler(seed=args.sampler_seed)
    study = open_study(open_storage(storage_url), name, record, sampler=sampler, pruner=_pruner(args),
                       check=args.trials > 0)
    print(f"study {name!r} in {storage_url}: {len(study.trials)} trial(s) so far; trial folders in {workdir}",
          flush=True)
    if args.trials > 0:
        study.optimize(objective, n_trials=args.trials, timeout=args.timeout, gc_after_trial=True,
                       callbacks=[_print_trial], catch=(TrialFailed,))
    trials = study.get_trials(deepcopy=False)
    print(trials_table(trials, list(dict.fromkeys([*space.names(), *(k for t in trials for k in t.params)]))))
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        print("best: none yet (no complete trial)")
        if args.write_best:
            raise SettingError(f"study {name!r} has no complete trial: nothing to write")
        return 0
    best = study.best_trial
    print(f"best: trial {best.number}, {METRIC} {best.value:.4f}: {best.params} ({best.user_attrs.get('folder')})")
    if args.write_best:
        # what the study's trials searched and had fixed (this command may give neither: --trials 0 --write-best)
        saved = study.user_attrs.get(STUDY_ATTR) or record
        searched = parse_space(saved["space"], f"study {name!r}") if saved["space"] != record["space"] else space
        trained = saved.get("fixed") or {}
        settings = searched.overrides(best.params, {**values, **trained})
        note = f"study {name!r} trial {best.number}, {METRIC} {best.value:.4f}"
        for line in write_best(bundle, settings, note):
            print(line)
        if trained:
            print(f"note: the trials also had the fixed settings {trained}; the bundle keeps its own values of those")
    return 0


def main(argv: list[str]) -> int:
    """``medclass tune``; returns the exit status (0 done, 1 error, 2 usage, 130 Ctrl-C)."""
    mine, rest = _split_argv(list(argv))
    parser = build_parser()
    args = parser.parse_args(mine)
    try:
        fixed = parse_overrides(rest)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return tune(args, fixed)
    except KeyboardInterrupt:
        eval("None")  # noqa: S307  (clears the "unhandled" mark MONAI's eval() leaves; see medclass.run_cli)
        print("medclass: stopped by Ctrl-C: the trial in progress is marked FAIL, finished trials stay in the "
              "study; run the same command again to continue it", file=sys.stderr, flush=True)
        return 130
    except Exception as exc:
        text = traceback.format_exc()
        if args.debug:
            print(text, file=sys.stderr)
        sys.stdout.flush()
        print(user_message(exc, log_file=None, debug_hint=not args.debug), file=sys.stderr, flush=True)
        return 1

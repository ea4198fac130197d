"""One tuning trial: the bundle's own ``train`` workflow with the trial's settings, in the trial's own folder,
reporting the validation key metric (mean AUC) of every epoch to Optuna, which may prune it.

A trial never reads the test split: before training, :func:`check_validation_not_test` compares the items the
validation evaluator reads with the test split and stops the study when they share an image or a patient.
"""

from __future__ import annotations

import gc
import logging
import math
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import monai.bundle  # noqa: F401  (its loggers exist before a trial's log takes them in)
import optuna
from ignite.engine import Engine, Events

from medclass.bundle_tools import WORKFLOW_FILES, config_files
from medclass.data.split import patient_key
from medclass.errors import MedclassError, SettingError
from medclass.files import atomic_json
from medclass.tuning.space import SearchSpace

__all__ = [
    "TrialFailed", "TrialReporter", "TrialObjective", "check_validation_not_test", "preflight", "run_training",
    "TUNE_SETS",
]

logger = logging.getLogger(__name__)

METRIC = "val_mean_auc"  # the train workflow's validation key metric
#: settings ``medclass tune`` sets for every trial itself (a fixed ``--key value`` may not give them)
TUNE_SETS = ("ckpt_dir", "log_dir", "items", "bundle_root")


class TrialReporter:
    """Reports the validation key metric of each epoch to an Optuna trial; stops training when it is pruned.

    :meth:`report` is the rule (report, ask the pruner, raise :class:`optuna.TrialPruned`); :meth:`attach` runs it
    after every validation and, when the trial is pruned, ends the training cleanly (``trainer.terminate()``: the
    checkpoints of the epoch are written and the folder unlocked) and keeps the exception in :attr:`pruned` for the
    objective to raise once the workflow has finished.

    Args:
        trial: the ``optuna.Trial`` (anything with ``report(value, step)`` and ``should_prune()``).
        metric: the evaluator metric to report; default: the evaluator's key metric.
    """

    def __init__(self, trial, metric: str | None = None) -> None:
        self.trial = trial
        self.metric = metric
        self.values: dict[int, float] = {}
        self.pruned: optuna.TrialPruned | None = None

    @property
    def best(self) -> float | None:
        """The best finite value reported (None before any)."""
        return max(self.values.values()) if self.values else None

    def report(self, epoch: int, value: Any) -> None:
        """Report ``value`` of ``epoch``; a value that is not a finite number is logged and not reported.

        Raises:
            optuna.TrialPruned: the trial's pruner stops it at this epoch.
        """
        if value is None or isinstance(value, bool) or not math.isfinite(float(value)):
            logger.warning("trial %s epoch %d: validation %s is %r (no positives or negatives of every label in "
                           "validation?); not reported", getattr(self.trial, "number", "?"), epoch,
                           self.metric or METRIC, value)
            return
        value = float(value)
        self.values[int(epoch)] = value
        self.trial.report(value, int(epoch))
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch} ({self.metric or METRIC} {value:.4f})")

    def attach(self, trainer: Engine, evaluator: Engine) -> None:
        """Report after every run of ``evaluator`` (the trainer's validation), at the trainer's epoch."""
        evaluator.add_event_handler(Events.EPOCH_COMPLETED, self._validated, trainer)

    def _validated(self, evaluator: Engine, trainer: Engine) -> None:
        name = self.metric or getattr(evaluator.state, "key_metric_name", None) or METRIC
        self.metric = name
        try:
            self.report(trainer.state.epoch, evaluator.state.metrics.get(name))
        except optuna.TrialPruned as exc:
            logger.info("trial %s: %s", getattr(self.trial, "number", "?"), exc)
            self.pruned = exc
            trainer.terminate()


class TrialFailed(Exception):
    """A trial whose training failed for its own settings (a diverged run's non-finite loss, out of memory): it is
    recorded as FAIL and the worker goes on with the next trial. Anything else (a setting error, a folder in use, a
    full disk, Ctrl-C) stops the worker."""


def _keys(items: Sequence[Mapping[str, Any]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {"image ids": set(), "image files": set(), "patients": set()}
    for it in items:
        out["image ids"].add(str(it.get("id")))
        if isinstance(it.get("image"), (str, Path)):
            out["image files"].add(str(Path(it["image"]).resolve()))
        key = patient_key(it)
        if key.startswith("patient:"):
            out["patients"].add(key)
    return out


def check_validation_not_test(validation: Sequence[Mapping[str, Any]], test: Sequence[Mapping[str, Any]],
                              where: str = "the bundle's data") -> None:
    """Stop a search whose validation items are, or share images or patients with, the test split.

    Raises:
        SettingError: no validation items, or an image id, image file or patient in both (named, with counts).
    """
    if not validation:
        raise SettingError(f"{where}: the validation split is empty; tuning selects on validation and never on the "
                           "test split: give the datalist a validation split, or split_fractions with a validation "
                           "share")
    val, tst = _keys(validation), _keys(test)
    for what in ("image ids", "image files", "patients"):
        shared = sorted(val[what] & tst[what])
        if shared:
            fix = ("--resplit true makes patient-disjoint splits" if what == "patients"
                   else "validation must be its own split")
            raise SettingError(f"{where}: the validation items the trials would select on share {len(shared)} "
                               f"{what} with the test split (e.g. {shared[:3]}); tuning never reads the test split: "
                               f"{fix}")


_WORKFLOW_LOG = logging.getLogger("monai.bundle.workflows")


def _no_logging_file_warning(record: logging.LogRecord) -> bool:
    """Drop ConfigWorkflow's "Logging file is set to False" warning: a trial logs into its own train.log."""
    return not str(record.msg).startswith("Logging file is set to False")


class _TrialLog:
    """During a trial: its log (everything at INFO) in ``train.log`` of its folder, the console quieter (WARNING)
    unless ``verbose``. MONAI's loggers (``StatsHandler``, ``monai.bundle``) print through their own handlers
    without propagating to the root logger: :meth:`capture` takes those in as they appear."""

    def __init__(self, path: Path, verbose: bool) -> None:
        self.handler = logging.FileHandler(path, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.verbose = verbose
        self.levels: dict[logging.Handler, int] = {}
        self.loggers: dict[logging.Logger, int] = {}

    def _take(self, log: logging.Logger) -> None:
        if log in self.loggers:
            return
        self.loggers[log] = log.level
        if log.level == logging.NOTSET or log.level > logging.INFO:
            log.setLevel(logging.INFO)
        log.addHandler(self.handler)
        for h in log.handlers:
            if h is not self.handler and h not in self.levels and not self.verbose:
                self.levels[h] = h.level
                h.setLevel(max(h.level, logging.WARNING))

    def capture(self) -> None:
        """Take in the root logger and every logger that prints by itself (handlers, no propagation)."""
        self._take(logging.getLogger())
        for log in list(logging.Logger.manager.loggerDict.values()):
            if isinstance(log, logging.Logger) and log.handlers and not log.propagate:
                self._take(log)

    def __enter__(self) -> _TrialLog:
        self.capture()
        return self

    def __exit__(self, *exc) -> None:
        for log, level in self.loggers.items():
            log.removeHandler(self.handler)
            log.setLevel(level)
        for h, level in self.levels.items():
            h.setLevel(level)
        self.handler.close()


def _workflow(bundle: Path, settings: Mapping[str, Any]):
    _WORKFLOW_LOG.addFilter(_no_logging_file_warning)
    try:
        wf = monai.bundle.ConfigWorkflow(config_file=config_files(bundle, *WORKFLOW_FILES["train"]),
                                         meta_file=str(bundle / "configs" / "metadata.json"), logging_file=False,
                                         workflow_type="train", **dict(settings))
    finally:
        _WORKFLOW_LOG.removeFilter(_no_logging_file_warning)
    wf.initialize()
    return wf


def _check_items(wf, bundle: Path):
    data = wf.parser.get_parsed_content("data")
    check_validation_not_test(wf.parser.get_parsed_content("items"), data.splits["test"],
                              where=str(data.source or bundle))
    return data


def preflight(bundle: Path, settings: Mapping[str, Any]) -> dict[str, int]:
    """Before a study: load the data as the trials will (``settings``, writing nothing) and check that the
    validation items are not test items; returns the split sizes."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="medclass-tune-") as tmp:
        wf = _workflow(bundle, {**settings, "ckpt_dir": tmp, "log_dir": tmp})
        try:
            return _check_items(wf, bundle).sizes()
        finally:
            del wf
            gc.collect()


def run_training(bundle: Path, settings: Mapping[str, Any], reporter: TrialReporter | None = None,
                 on_built: Callable[[], None] | None = None) -> None:
    """Run the bundle's ``train`` workflow with ``settings`` (``--key value`` overrides), after checking that its
    validation items are not test items; ``reporter`` is attached to its trainer and validation evaluator, and
    ``on_built`` is called once they are built."""
    wf = _workflow(bundle, settings)
    try:
        _check_items(wf, bundle)  # the evaluator validates on these items, less any unreadable ones
        trainer = wf.parser.get_parsed_content("train#trainer")
        evaluator = wf.parser.get_parsed_content("validate#evaluator")
        if reporter is not None:
            reporter.attach(trainer, evaluator)
        if on_built is not None:
            on_built()
        wf.run()
    finally:
        try:
            wf.finalize()
        finally:
            del wf
            gc.collect()


class TrialObjective:
    """The objective of a study: train one trial's settings, return its best validation AUC.

    Args:
        bundle: the bundle folder.
        space: the search space.
        fixed: settings every trial gets (the command line's ``--key value``), before the trial's own.
        base: the bundle's values with ``fixed`` over them (``augment.<option>`` values go into its ``augment``).
        workdir: trial ``N`` trains into ``workdir/trial_000N`` (``models/``, ``runs/``, ``train.log``,
            ``trial.json``), a folder no other trial uses.
        verbose: print the trials' training logs too (they always go to ``train.log``).
    """

    def __init__(self, bundle: Path, space: SearchSpace, fixed: Mapping[str, Any], base: Mapping[str, Any],
                 workdir: Path, verbose: bool = False) -> None:
        self.bundle, self.space, self.fixed, self.base = Path(bundle).resolve(), space, dict(fixed), dict(base)
        self.workdir, self.verbose = Path(workdir).resolve(), verbose

    def settings(self, params: Mapping[str, Any], folder: Path) -> dict[str, Any]:
        """The ``--key value`` settings of a trial with ``params``, training into ``folder``."""
        return {"bundle_root": str(self.bundle), "progress_bar": False, "cache_dir": str(self.workdir / "cache"),
                **self.fixed, **self.space.overrides(params, self.base),
                "ckpt_dir": str(folder / "models"), "log_dir": str(folder / "runs")}

    def __call__(self, trial) -> float:
        params = self.space.suggest(trial)
        folder = self.workdir / f"trial_{trial.number:04d}"
        try:
            folder.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            raise SettingError(f"{folder} already exists: {self.workdir} holds the trials of another study (an "
                               "earlier study of that name, deleted from its storage?); give another --workdir or "
                               "--study") from None
        settings = self.settings(params, folder)
        trial.set_user_attr("folder", str(folder))
        atomic_json(folder / "trial.json", {"number": trial.number, "params": params, "settings": settings},
                    indent=1)
        reporter = TrialReporter(trial)
        logger.info("trial %d: %s", trial.number, params)
        with _TrialLog(folder / "train.log", self.verbose) as log:
            try:
                run_training(self.bundle, settings, reporter, on_built=log.capture)
            except BaseException as exc:
                (folder / "error.log").write_text(traceback.format_exc(), encoding="utf-8")
                if isinstance(exc, (FloatingPointError, RuntimeError)) and not isinstance(exc, MedclassError):
                    # this trial's settings failed (diverged, out of memory): the worker goes on with the next
                    raise TrialFailed(f"trial {trial.number} failed: {exc} (see {folder / 'error.log'})") from exc
                raise
        if reporter.pruned is not None:
            raise reporter.pruned
        if reporter.best is None:
            raise SettingError(f"trial {trial.number}: no validation epoch gave a finite {reporter.metric or METRIC} "
                               f"(see {folder / 'train.log'}); the validation split needs positives and negatives of "
                               "each label")
        return reporter.best

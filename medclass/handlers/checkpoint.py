"""Best and last checkpoints, written atomically, with resume from the last one (of the same, unfinished run)."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from medclass.files import atomic_save  # noqa: F401  (re-exported: medclass.handlers.checkpoint.atomic_save)
from medclass.runs import TrainingRun
from medclass.vocab import flag, unwrap_model

logger = logging.getLogger(__name__)


class CheckpointManager:
    """Keeps ``model.pt`` (the network's state_dict at the best validation key metric) and ``last.pt``
    (network, optimizer, LR scheduler, trainer and best-metric state after every epoch, the run's fingerprint, and
    ``finished`` once the trainer completed), and resumes an unfinished run from ``last.pt`` when the trainer
    starts. Whether to resume is decided by a :class:`medclass.runs.TrainingRun` (see there): only the same,
    unfinished run is continued; another run's or a finished run's ``last.pt`` stops with an error.

    Attach it to the trainer after the ``ValidationHandler`` so that ``last.pt`` holds the epoch's validation
    result. ``model.pt`` is a plain state_dict (thresholds and label names included by
    :class:`medclass.networks.Classifier`), the format MONAI's ``ckpt_export`` and ``CheckpointLoader`` read.

    Args:
        ckpt_dir: folder for the checkpoints.
        network: the trained network (DDP-wrapped or not).
        optimizer: its optimizer.
        lr_scheduler: an LR scheduler, or ``None``.
        evaluator: the validation evaluator whose best key metric selects ``model.pt``; without it the last
            epoch's weights are written to ``model.pt``.
        resume: ``auto`` / ``true``: continue an unfinished ``last.pt`` of the same run; ``false``: start over.
        fingerprint: the run's identity (see :func:`medclass.runs.fingerprint`); a ``last.pt`` with another one
            stops with an error rather than silently continuing a different run.
        best_filename: name of the best-model file.
        last_filename: name of the last-epoch file.
        enabled: set False on ranks other than 0 (resume still loads on every rank).
        averaging: a :class:`medclass.handlers.WeightAveraging`; when enabled, ``model.pt`` holds the averaged
            weights (the ones validated) and ``last.pt`` the average as well, so a resumed run continues it.
            The checkpoint manager attaches it to the trainer (what is averaged and what is saved go together).
        run: the :class:`medclass.runs.TrainingRun` that decided (before the data was cached) whether to resume;
            when given, ``resume`` and ``fingerprint`` are taken from it. Without it the manager makes the same
            decision itself when the trainer starts (without a folder lock).
    """

    def __init__(
        self,
        ckpt_dir: str | os.PathLike,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        lr_scheduler: Any = None,
        evaluator: Engine | None = None,
        resume: Any = "auto",
        fingerprint: dict | None = None,
        best_filename: str = "model.pt",
        last_filename: str = "last.pt",
        enabled: bool = True,
        averaging: Any = None,
        run: TrainingRun | None = None,
    ) -> None:
        self.ckpt_dir = Path(ckpt_dir)
        self.network = network
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.evaluator = evaluator
        self.enabled = flag(enabled, "enabled")
        self._own_run = run is None
        if run is None:
            run = TrainingRun(ckpt_dir, fingerprint, resume, enabled=self.enabled, best_filename=best_filename,
                              last_filename=last_filename, lock=False)
        self.run = run
        self.fingerprint = run.fingerprint
        self.best_path = self.ckpt_dir / best_filename
        self.last_path = self.ckpt_dir / last_filename
        self.resumed_from_epoch: int | None = None
        self.averaging = averaging if averaging is not None and getattr(averaging, "enabled", False) else None

    def attach(self, trainer: Engine) -> None:
        self.trainer = trainer
        net = unwrap_model(self.network)
        if hasattr(net, "fingerprint"):  # the model file records the run that trained it (every rank the same)
            net.fingerprint = self.fingerprint
        trainer.add_event_handler(Events.STARTED, self._resume)
        trainer.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self._save)
        trainer.add_event_handler(Events.COMPLETED, self._finished)
        if self.averaging is not None:
            self.averaging.attach(trainer)

    def _resume(self, trainer: Engine) -> None:
        self.run.max_epochs = trainer.state.max_epochs
        ckpt = self.run.take_checkpoint()
        if ckpt is None:
            return
        unwrap_model(self.network).load_state_dict(ckpt["network"])
        if self.optimizer is not None and "optimizer" in ckpt:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.lr_scheduler is not None and "lr_scheduler" in ckpt:
            self.lr_scheduler.load_state_dict(ckpt["lr_scheduler"])
        if self.averaging is not None and "averaging" in ckpt:
            self.averaging.load_state_dict(ckpt["averaging"])
        state = ckpt["trainer"]
        trainer.state.epoch = int(state["epoch"])
        trainer.state.iteration = int(state["iteration"])
        if self.evaluator is not None and ckpt.get("best_metric") is not None:
            self.evaluator.state.best_metric = float(ckpt["best_metric"])
            self.evaluator.state.best_metric_epoch = int(ckpt["best_metric_epoch"])
        self.resumed_from_epoch = trainer.state.epoch
        self.run.saved_epoch = trainer.state.epoch
        logger.info("resumed from %s at epoch %d of %d", self.last_path, trainer.state.epoch, trainer.state.max_epochs)

    def _epoch_started(self, trainer: Engine) -> None:
        self.run.current_epoch = trainer.state.epoch

    def _best_improved(self, trainer: Engine) -> bool:
        if self.evaluator is None:
            return True
        best_epoch = getattr(self.evaluator.state, "best_metric_epoch", -1)
        return best_epoch == trainer.state.epoch

    def _save(self, trainer: Engine) -> None:
        if not self.enabled:
            return
        net = unwrap_model(self.network)
        if self._best_improved(trainer) or not self.best_path.exists():
            best = self.averaging.averaged_state_dict() if self.averaging is not None else net.state_dict()
            atomic_save(best, self.best_path)
            metric = getattr(self.evaluator.state, "best_metric", None) if self.evaluator else None
            logger.info("epoch %d: saved %s (key metric %s)", trainer.state.epoch, self.best_path, metric)
        atomic_save(self._last_checkpoint(trainer, finished=False), self.last_path)
        self.run.saved_epoch = trainer.state.epoch

    def _finished(self, trainer: Engine) -> None:
        """Mark ``last.pt`` finished: a later ``resume: auto`` run says so instead of training nothing."""
        if self.enabled and self.run.saved_epoch is not None:
            atomic_save(self._last_checkpoint(trainer, finished=True), self.last_path)
            logger.info("training finished at epoch %d; best model %s", trainer.state.epoch, self.best_path)
        if self._own_run:
            self.run.finish()

    def _last_checkpoint(self, trainer: Engine, finished: bool) -> dict[str, Any]:
        net = unwrap_model(self.network)
        ckpt: dict[str, Any] = {
            "network": net.state_dict(),
            "trainer": {"epoch": trainer.state.epoch, "iteration": trainer.state.iteration},
            "fingerprint": self.fingerprint,
            "finished": bool(finished),
        }
        if self.averaging is not None:
            ckpt["averaging"] = self.averaging.state_dict()
        if self.optimizer is not None:
            ckpt["optimizer"] = self.optimizer.state_dict()
        if self.lr_scheduler is not None:
            ckpt["lr_scheduler"] = self.lr_scheduler.state_dict()
        if self.evaluator is not None:
            best = getattr(self.evaluator.state, "best_metric", None)
            if best is not None and not (isinstance(best, float) and math.isinf(best)):
                ckpt["best_metric"] = float(best)
                ckpt["best_metric_epoch"] = int(self.evaluator.state.best_metric_epoch)
        return ckpt

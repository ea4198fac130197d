"""Early stopping driven by the validation evaluator's best-metric bookkeeping."""

from __future__ import annotations

import logging

from ignite.engine import Engine, Events

logger = logging.getLogger(__name__)


class EarlyStopping:
    """Stop training when the validation key metric has not improved for ``patience`` epochs.

    Attached to the trainer (after the ``ValidationHandler``), it reads ``evaluator.state.best_metric_epoch``,
    which MONAI maintains and :class:`~medclass.handlers.CheckpointManager` restores on resume, so it holds
    no state of its own and a resumed run stops at the same epoch an uninterrupted one would.
    (MONAI's ``EarlyStopHandler`` needs the trainer when the evaluator is built, a reference cycle in configs.)

    Args:
        evaluator: the validation evaluator.
        patience: epochs without improvement before stopping; ``0`` or ``None`` disables.
        min_epochs: never stop before this epoch.
    """

    def __init__(self, evaluator: Engine, patience: int | None = 10, min_epochs: int = 1) -> None:
        self.evaluator = evaluator
        self.patience = int(patience or 0)
        self.min_epochs = int(min_epochs)

    def attach(self, trainer: Engine) -> None:
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, trainer: Engine) -> None:
        if self.patience <= 0 or trainer.state.epoch < self.min_epochs:
            return
        best_epoch = getattr(self.evaluator.state, "best_metric_epoch", -1)
        if best_epoch is None or best_epoch < 0:
            best_epoch = 0
        if trainer.state.epoch - best_epoch >= self.patience:
            logger.info(
                "early stop at epoch %d: no improvement of the key metric since epoch %d (patience %d)",
                trainer.state.epoch, best_epoch, self.patience,
            )
            trainer.terminate()

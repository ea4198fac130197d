"""TensorBoard logs that stay clean across a resumed run.

A run stopped by Ctrl-C or a crash has written the steps of the epoch in progress, which ``last.pt`` does not hold;
the resumed run writes those steps again. :class:`TensorBoardStats` opens its writer with TensorBoard's
``purge_step`` at the first step the resumed run writes, so TensorBoard drops the earlier files' events from that step
on and each step shows once. The training loss (per iteration) and the validation metrics (per epoch) count steps on
different scales, so each has its own folder under ``log_dir`` (``train/`` and ``validation/``: two runs in
TensorBoard), and each folder's purge step is on its own scale.
"""

from __future__ import annotations

import os
from typing import Any

from ignite.engine import Engine, Events
from monai.handlers import TensorBoardStatsHandler
from torch.utils.tensorboard import SummaryWriter

__all__ = ["TensorBoardStats"]

_SCALES = {"train": "iteration", "validation": "epoch"}


class TensorBoardStats(TensorBoardStatsHandler):
    """MONAI's ``TensorBoardStatsHandler`` writing into ``log_dir/<part>``, purging what a resumed run rewrites.

    Args:
        log_dir: the run's TensorBoard folder.
        part: ``train`` (the trainer's per-iteration loss) or ``validation`` (the evaluator's per-epoch metrics).
        run: the training run (:class:`medclass.runs.TrainingRun`) after its ``start()``: its ``resumed``
            (``{"epoch", "iteration"}`` of the ``last.pt`` continued, or ``None``) sets the purge step. ``None``:
            never purge.
        kwargs: ``TensorBoardStatsHandler``'s other arguments (``tag_name``, ``iteration_log``, ...).
    """

    def __init__(self, log_dir: str | os.PathLike, part: str, run: Any = None, **kwargs: Any) -> None:
        if part not in _SCALES:
            raise ValueError(f"TensorBoardStats part: expected one of {', '.join(_SCALES)}, got {part!r}")
        resumed = getattr(run, "resumed", None)
        self.purge_step = int(resumed[_SCALES[part]]) + 1 if resumed else None
        writer = SummaryWriter(log_dir=os.path.join(os.fspath(log_dir), part), purge_step=self.purge_step)
        super().__init__(summary_writer=writer, **kwargs)
        self.internal_writer = True  # this handler's own writer: close() closes it

    def attach(self, engine: Engine) -> None:
        super().attach(engine)
        engine.add_event_handler(Events.COMPLETED, self._flush)

    def _flush(self, engine: Engine) -> None:
        self._writer.flush()

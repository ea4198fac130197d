"""Learning-rate schedule stepped once per weight update."""

from __future__ import annotations

from typing import Any

from ignite.engine import Engine, Events


class LrSchedule:
    """Steps ``lr_scheduler`` after every training iteration that updated the weights.

    Iterations whose optimizer step was skipped (non-finite loss or gradient, or a loss-scaler step skipped
    under fp16; :class:`medclass.engines.Trainer` sets ``engine.optimizer_stepped``) leave the schedule where it
    is, so the schedule counts weight updates and torch's "lr_scheduler.step() before optimizer.step()" warning
    (the first learning rate of the schedule silently lost) cannot occur. Engines without that attribute step
    every iteration, like MONAI's ``LrScheduleHandler(epoch_level=False)``.

    Args:
        lr_scheduler: a torch LR scheduler.
    """

    def __init__(self, lr_scheduler: Any) -> None:
        if not callable(getattr(lr_scheduler, "step", None)):
            raise TypeError(f"lr_scheduler must have a step() method, got {type(lr_scheduler).__name__}")
        self.lr_scheduler = lr_scheduler

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if getattr(engine, "optimizer_stepped", True):
            self.lr_scheduler.step()

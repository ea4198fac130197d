"""A progress bar that MONAI engines can attach like any other handler."""

from __future__ import annotations

from ignite.engine import Engine
from ignite.handlers import ProgressBar as _IgniteProgressBar


class ProgressBar:
    """tqdm progress bar per epoch showing the running loss (trainer) or nothing (evaluator).

    Args:
        desc: text before the bar.
        show_loss: display the trainer's ``loss`` output.
        persist: keep the finished bar on screen.
    """

    def __init__(self, desc: str = "", show_loss: bool = True, persist: bool = False) -> None:
        self.bar = _IgniteProgressBar(desc=desc, persist=persist)
        self.show_loss = show_loss

    def attach(self, engine: Engine) -> None:
        def _loss(output):
            if isinstance(output, (list, tuple)) and output:  # decollated engine output
                output = output[0]
            if isinstance(output, dict) and "loss" in output:
                return {"loss": float(output["loss"])}
            return {}

        self.bar.attach(engine, output_transform=_loss if self.show_loss else None)

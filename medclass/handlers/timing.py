"""Whether training waits for data: the share of each step spent getting the batch."""

from __future__ import annotations

import logging
import time

from ignite.engine import Engine, Events

logger = logging.getLogger(__name__)

__all__ = ["DataWaitTimer"]


class DataWaitTimer:
    """Times, per epoch, the wait for each batch (the loader) against the whole step (loader + compute) and logs
    whether the epoch was bound by data loading (``data_wait_share`` above ``bound_at``) or by compute.

    The figures of the last epoch are in ``engine.state.metrics`` as ``data_wait_share`` (0-1) and
    ``images_per_second``.

    Args:
        bound_at: the data-wait share above which an epoch is reported as loading-bound.
    """

    def __init__(self, bound_at: float = 0.3) -> None:
        self.bound_at = float(bound_at)
        self._wait = self._total = 0.0
        self._images = 0
        self._t_batch = self._t_epoch = 0.0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.GET_BATCH_STARTED, self._batch_started)
        engine.add_event_handler(Events.GET_BATCH_COMPLETED, self._batch_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def _epoch_started(self, engine: Engine) -> None:
        self._wait = 0.0
        self._images = 0
        self._t_epoch = time.perf_counter()

    def _batch_started(self, engine: Engine) -> None:
        self._t_batch = time.perf_counter()

    def _batch_completed(self, engine: Engine) -> None:
        self._wait += time.perf_counter() - self._t_batch
        batch = engine.state.batch
        images = batch.get("image") if isinstance(batch, dict) else None
        self._images += int(images.shape[0]) if hasattr(images, "shape") else 0

    def _epoch_completed(self, engine: Engine) -> None:
        total = max(time.perf_counter() - self._t_epoch, 1e-9)
        share = self._wait / total
        engine.state.metrics["data_wait_share"] = share
        engine.state.metrics["images_per_second"] = self._images / total
        bound = "data loading" if share > self.bound_at else "compute"
        logger.info("epoch %d: %.1f images/s, %.0f%% of the time waiting for data: bound by %s%s",
                    engine.state.epoch, self._images / total, 100 * share, bound,
                    " (more num_workers, or cache: memory, may help)" if share > self.bound_at else "")

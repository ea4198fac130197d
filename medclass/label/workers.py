"""A bounded pool of inference workers for the server's event loop (no MONAI Label import).

The event loop only accepts requests and answers them; each inference runs in one of ``workers`` threads, and at
most ``queue`` more wait. A request beyond that is refused at once with :class:`~medclass.label.safety.
ClientError` 503 and a ``Retry-After`` estimated from the recent inference times, rather than waiting without
bound. Torch releases the GIL in its kernels, and each worker thread keeps its own copy of the network
(:meth:`medclass.label.bundle.BundleModel._served`), so the workers run side by side.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from medclass.label.safety import ClientError

__all__ = ["WorkerPool"]

T = TypeVar("T")


class WorkerPool:
    """Run blocking calls off the event loop with a bounded queue.

    Args:
        workers: threads running calls at the same time.
        queue: calls that may wait for a thread; beyond ``workers + queue`` calls in flight, :meth:`run` refuses.
    """

    def __init__(self, workers: int, queue: int) -> None:
        if workers < 1 or queue < 0:
            raise ValueError(f"workers must be >= 1 and queue >= 0, got {workers} and {queue}")
        self.workers = int(workers)
        self.queue = int(queue)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="medclass-infer")
        self._lock = threading.Lock()
        self._in_flight = 0  # submitted and not finished (a client that hung up does not free its slot early)
        self._seconds: deque[float] = deque(maxlen=32)

    @property
    def in_flight(self) -> int:
        """Calls running or waiting now."""
        return self._in_flight

    def retry_after(self) -> int:
        """Seconds after which a refused client may try again: the queue's expected drain time (at least 1)."""
        per_call = sum(self._seconds) / len(self._seconds) if self._seconds else 1.0
        return max(1, math.ceil(per_call * self._in_flight / self.workers))

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker thread, awaited without blocking the event loop.

        Raises:
            ClientError: 503 with ``Retry-After`` when ``workers + queue`` calls are in flight already.
        """
        with self._lock:
            if self._in_flight >= self.workers + self.queue:
                raise ClientError(f"the server is busy ({self._in_flight} requests in progress); try again shortly",
                                  status=503, headers={"Retry-After": str(self.retry_after())})
            self._in_flight += 1

        def call() -> T:
            t0 = time.perf_counter()
            try:
                return fn(*args)
            finally:
                with self._lock:
                    self._in_flight -= 1
                    self._seconds.append(time.perf_counter() - t0)

        try:
            future = self._pool.submit(call)
        except RuntimeError:  # shut down
            with self._lock:
                self._in_flight -= 1
            raise
        return await asyncio.wrap_future(future)

    def shutdown(self) -> None:
        """Stop accepting calls; running ones finish."""
        self._pool.shutdown(wait=False, cancel_futures=True)

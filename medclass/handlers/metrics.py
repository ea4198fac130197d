"""Epoch metrics for ignite evaluators: mean AUC and accuracy with NaN (unknown) labels masked out."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import torch
from monai.handlers import IgniteMetricHandler, from_engine
from monai.metrics import CumulativeIterationMetric

from medclass.metrics import accuracy_at, per_label_auc

logger = logging.getLogger(__name__)


class _CumulativePredLabel(CumulativeIterationMetric):
    """Accumulates (pred, label) pairs over an epoch (gathered across ranks) for an epoch-level metric.

    ``count`` is the number of samples the last aggregate saw, over all ranks (a distributed validation must
    count every sample once: no padding duplicates).
    """

    count: int = 0

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None):  # type: ignore[override]
        if y is None:
            raise ValueError("this metric needs labels: the evaluation data has no 'label' key")
        return y_pred.detach().float(), y.detach().float()

    def _arrays(self):
        y_pred, y = self.get_buffer()
        if not isinstance(y_pred, torch.Tensor) or y_pred.numel() == 0:
            self.count = 0
            return None, None
        self.count = len(y)
        return y.cpu().numpy().reshape(len(y), -1), y_pred.cpu().numpy().reshape(len(y_pred), -1)


class MaskedAUCMetric(_CumulativePredLabel):
    """Mean of per-label ROC AUCs over the epoch; labels ``(B, C)`` with NaN = unknown.

    ``per_label`` holds the last per-label AUCs (``nan`` where a label has no positive or no negative).
    """

    def __init__(self, label_names: Sequence[str] | None = None) -> None:
        super().__init__()
        self.label_names = list(label_names) if label_names is not None else None
        self.per_label: list[float] = []

    def aggregate(self) -> float:  # type: ignore[override]
        y, p = self._arrays()
        if y is None:
            return math.nan
        aucs = per_label_auc(y, p)
        self.per_label = [float(a) for a in aucs]
        names = self.label_names or [f"class_{i}" for i in range(len(aucs))]
        if len(aucs) > 1:
            logger.info("per-label AUC: %s", ", ".join(f"{n}={a:.3f}" for n, a in zip(names, aucs)))
        defined = [a for a in self.per_label if not math.isnan(a)]
        if not defined:
            logger.warning("AUC is undefined for every label (no positives or no negatives among known labels)")
            return math.nan
        return float(sum(defined) / len(defined))


class MaskedAccuracyMetric(_CumulativePredLabel):
    """Accuracy at fixed thresholds (multi-label/binary) or arg-max (multi-class) over known labels."""

    def __init__(self, task: str = "multilabel", thresholds: float | Sequence[float] = 0.5) -> None:
        super().__init__()
        self.task = task
        self.thresholds = thresholds

    def aggregate(self) -> float:  # type: ignore[override]
        y, p = self._arrays()
        if y is None:
            return math.nan
        return accuracy_at(y, p, self.thresholds, self.task)


class MeanAUC(IgniteMetricHandler):
    """Ignite handler for :class:`MaskedAUCMetric` (expects post-processed probabilities in ``pred``)."""

    def __init__(
        self,
        label_names: Sequence[str] | None = None,
        output_transform: Callable | None = None,
    ) -> None:
        super().__init__(
            metric_fn=MaskedAUCMetric(label_names),
            output_transform=output_transform or from_engine(["pred", "label"]),
            save_details=False,
        )


class MeanAccuracy(IgniteMetricHandler):
    """Ignite handler for :class:`MaskedAccuracyMetric`."""

    def __init__(
        self,
        task: str = "multilabel",
        thresholds: float | Sequence[float] = 0.5,
        output_transform: Callable | None = None,
    ) -> None:
        super().__init__(
            metric_fn=MaskedAccuracyMetric(task, thresholds),
            output_transform=output_transform or from_engine(["pred", "label"]),
            save_details=False,
        )

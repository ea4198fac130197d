"""Classification losses that ignore unknown labels.

Targets are float ``(B, C)`` where ``NaN`` marks an unknown label (e.g. a finding not annotated for that image).
Unknown entries are masked out: they neither change the loss nor receive a (NaN or non-zero) gradient.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from medclass.vocab import TASKS

logger = logging.getLogger(__name__)

__all__ = [
    "LOSS_NAMES",
    "TASKS",
    "MaskedBCEWithLogitsLoss",
    "MaskedCrossEntropyLoss",
    "MaskedFocalLoss",
    "build_loss",
    "pos_weight_from_labels",
]

LOSS_NAMES: tuple[str, ...] = ("auto", "bce", "focal", "ce")
_REDUCTIONS = ("mean", "sum", "none")


def _as_weight(name: str, value: Any, allow_zero: bool = False) -> torch.Tensor | None:
    """Validate a positive (per-class or scalar) weight into a float tensor, or ``None``."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a float or a sequence of floats, got a bool")
    try:
        t = torch.as_tensor(np.asarray(value, dtype=np.float32) if not isinstance(value, torch.Tensor) else value)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a float or a sequence of floats, got {value!r}") from e
    t = t.detach().to(torch.float32).flatten().cpu()
    if t.numel() == 0:
        raise ValueError(f"{name} is empty")
    if not bool(torch.isfinite(t).all()) or bool((t < 0).any()) or (not allow_zero and bool((t == 0).any())):
        raise ValueError(f"{name} must be finite and {'>= 0' if allow_zero else '> 0'}, got {t.tolist()}")
    return t


def _check_reduction(reduction: str) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return reduction


def _check_smoothing(label_smoothing: float) -> float:
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)):
        raise TypeError(f"label_smoothing must be a float, got {label_smoothing!r}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    return float(label_smoothing)


def _align(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Targets as float with the logits' shape (``(B,)`` targets are accepted for ``(B, 1)`` logits)."""
    if not isinstance(logits, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise TypeError(f"logits and targets must be tensors, got {type(logits).__name__}, {type(targets).__name__}")
    if targets.shape != logits.shape:
        if logits.dim() == 2 and logits.shape[1] == 1 and targets.shape == logits.shape[:1]:
            targets = targets.unsqueeze(1)
        else:
            raise ValueError(f"targets shape {tuple(targets.shape)} does not match logits shape {tuple(logits.shape)}")
    return targets.to(dtype=logits.dtype, device=logits.device)


def _reduce(loss: torch.Tensor, mask: torch.Tensor, reduction: str) -> torch.Tensor:
    """Zero the masked entries, then mean over valid entries / sum / none. Mean of nothing is 0 (zero grad)."""
    loss = torch.where(mask, loss, torch.zeros_like(loss))
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / mask.sum().clamp(min=1).to(loss.dtype)


def _per_class(weight: torch.Tensor | None, logits: torch.Tensor, name: str) -> torch.Tensor | None:
    """A scalar or per-class (last dim) weight, on the logits' device/dtype."""
    if weight is None:
        return None
    if weight.numel() not in (1, logits.shape[-1]):
        raise ValueError(f"{name} has {weight.numel()} values but the logits have {logits.shape[-1]} classes")
    return weight.to(device=logits.device, dtype=logits.dtype)


class MaskedBCEWithLogitsLoss(nn.Module):
    """Binary cross-entropy on logits over the known labels (NaN targets are ignored).

    Args:
        pos_weight: weight of the positive term, a float or one per class (as ``torch.nn.BCEWithLogitsLoss``),
            e.g. from :func:`pos_weight_from_labels`.
        label_smoothing: targets become ``t * (1 - eps) + eps / 2``.
        reduction: ``"mean"`` over the known entries (0, with zero gradient, where none is known), ``"sum"``
            or ``"none"`` (elementwise, 0 at unknown entries).

    Shapes:
        logits ``(B, C)`` (or any shape), targets the same shape (``(B,)`` allowed with ``(B, 1)`` logits).
    """

    pos_weight: torch.Tensor | None

    def __init__(
        self,
        pos_weight: Sequence[float] | float | torch.Tensor | None = None,
        label_smoothing: float = 0.0,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.register_buffer("pos_weight", _as_weight("pos_weight", pos_weight))
        self.label_smoothing = _check_smoothing(label_smoothing)
        self.reduction = _check_reduction(reduction)

    def elementwise(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unreduced loss (finite everywhere) and the mask of known entries."""
        targets = _align(logits, targets)
        mask = ~torch.isnan(targets)
        t = torch.where(mask, targets, torch.zeros_like(targets))
        if self.label_smoothing:
            t = t * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        pw = _per_class(self.pos_weight, logits, "pos_weight")
        loss = F.binary_cross_entropy_with_logits(logits, t, pos_weight=pw, reduction="none")
        return loss, mask

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Loss of logits against targets with NaN = unknown."""
        loss, mask = self.elementwise(logits, targets)
        return _reduce(loss, mask, self.reduction)


class MaskedFocalLoss(MaskedBCEWithLogitsLoss):
    """Sigmoid focal loss (Lin et al. 2017) over the known labels (NaN targets are ignored).

    ``loss = alpha_t * (1 - p_t) ** gamma * bce`` with ``p_t = p t + (1 - p)(1 - t)`` and
    ``alpha_t = alpha t + (1 - alpha)(1 - t)``. With ``gamma=0`` and no ``alpha`` it equals
    :class:`MaskedBCEWithLogitsLoss`.

    Args:
        gamma: focusing parameter (>= 0).
        alpha: weight of positives in [0, 1], a float or one per class; ``None`` for no alpha weighting.
        pos_weight: positive-term weight inside the BCE, as in :class:`MaskedBCEWithLogitsLoss`.
        label_smoothing: as in :class:`MaskedBCEWithLogitsLoss`.
        reduction: ``"mean"`` (over known entries), ``"sum"`` or ``"none"``.
    """

    alpha: torch.Tensor | None

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: float | Sequence[float] | None = None,
        pos_weight: Sequence[float] | float | torch.Tensor | None = None,
        label_smoothing: float = 0.0,
        reduction: str = "mean",
    ) -> None:
        super().__init__(pos_weight=pos_weight, label_smoothing=label_smoothing, reduction=reduction)
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma >= 0:
            raise ValueError(f"gamma must be a float >= 0, got {gamma!r}")
        self.gamma = float(gamma)
        a = _as_weight("alpha", alpha, allow_zero=True)
        if a is not None and bool((a > 1).any()):
            raise ValueError(f"alpha must be in [0, 1], got {a.tolist()}")
        self.register_buffer("alpha", a)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Focal loss of logits against targets with NaN = unknown."""
        bce, mask = self.elementwise(logits, targets)
        t = torch.where(mask, _align(logits, targets), torch.zeros_like(logits))
        if self.label_smoothing:
            t = t * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        p = torch.sigmoid(logits)
        p_t = p * t + (1.0 - p) * (1.0 - t)
        loss = bce
        if self.gamma:
            loss = loss * (1.0 - p_t).clamp(min=0.0) ** self.gamma
        a = _per_class(self.alpha, logits, "alpha")
        if a is not None:
            loss = loss * (a * t + (1.0 - a) * (1.0 - t))
        return _reduce(loss, mask, self.reduction)


class MaskedCrossEntropyLoss(nn.Module):
    """Softmax cross-entropy for multi-class targets, ignoring unknown rows.

    Targets are one-hot (or probability) rows ``(B, C)``; a row with any NaN is unknown and excluded. Integer
    class indices ``(B,)`` are accepted too, negative indices meaning unknown.

    Args:
        label_smoothing: as in ``torch.nn.functional.cross_entropy``.
        weight: optional class weights ``(C,)`` (as ``torch.nn.CrossEntropyLoss``; the mean is then over rows,
            not weighted, for probability targets, as in torch).
        reduction: ``"mean"`` over known rows (0, zero gradient, where none), ``"sum"`` or ``"none"`` (per row).

    Shapes:
        logits ``(B, C)``, targets ``(B, C)`` float or ``(B,)`` integer.
    """

    weight: torch.Tensor | None

    def __init__(
        self,
        label_smoothing: float = 0.0,
        weight: Sequence[float] | torch.Tensor | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.label_smoothing = _check_smoothing(label_smoothing)
        self.register_buffer("weight", _as_weight("weight", weight, allow_zero=True))
        self.reduction = _check_reduction(reduction)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of logits ``(B, C)`` against one-hot rows (NaN row = unknown) or indices (< 0 = unknown)."""
        if not isinstance(logits, torch.Tensor) or not isinstance(targets, torch.Tensor):
            raise TypeError("logits and targets must be tensors")
        if logits.dim() != 2:
            raise ValueError(f"logits must be (B, C), got shape {tuple(logits.shape)}")
        w = _per_class(self.weight, logits, "weight")
        if w is not None and w.numel() != logits.shape[1]:
            raise ValueError(f"weight has {w.numel()} values but the logits have {logits.shape[1]} classes")
        if not torch.is_floating_point(targets):
            if targets.shape != logits.shape[:1]:
                raise ValueError(
                    f"integer targets must be (B,) class indices, got {tuple(targets.shape)} "
                    f"for logits {tuple(logits.shape)}"
                )
            targets = targets.to(logits.device)
            valid = targets >= 0
            idx = torch.where(valid, targets, torch.zeros_like(targets)).long()
            loss = F.cross_entropy(logits, idx, weight=w, reduction="none", label_smoothing=self.label_smoothing)
        else:
            targets = _align(logits, targets)
            valid = ~torch.isnan(targets).any(dim=1)
            t = torch.where(valid[:, None], targets, torch.zeros_like(targets))
            loss = F.cross_entropy(logits, t, weight=w, reduction="none", label_smoothing=self.label_smoothing)
        loss = torch.where(valid, loss, torch.zeros_like(loss))
        if self.reduction == "none":
            return loss
        if self.reduction == "sum":
            return loss.sum()
        if w is not None and not torch.is_floating_point(targets):
            denom = (w[idx] * valid.to(w.dtype)).sum()
            return loss.sum() / torch.where(denom > 0, denom, torch.ones_like(denom))
        return loss.sum() / valid.sum().clamp(min=1).to(loss.dtype)


def pos_weight_from_labels(
    labels: np.ndarray | torch.Tensor | Sequence[Sequence[float]], max_weight: float = 100.0
) -> torch.Tensor:
    """Per-label positive weight ``negatives / positives`` over the known (non-NaN) labels.

    Soft labels count fractionally (``positives = sum(y)``, ``negatives = sum(1 - y)``). A label with no known
    positive or no known negative gets 1.0. Weights are capped at ``max_weight``.

    Args:
        labels: ``(N, C)`` (or ``(N,)`` for one label) array/tensor of 0/1 with NaN = unknown.
        max_weight: upper bound of a weight (> 0).

    Returns:
        Float tensor ``(C,)``.
    """
    if isinstance(max_weight, bool) or not isinstance(max_weight, (int, float)) or not max_weight > 0:
        raise ValueError(f"max_weight must be a float > 0, got {max_weight!r}")
    if isinstance(labels, torch.Tensor):
        y = labels.detach().cpu().to(torch.float64).numpy()
    else:
        try:
            y = np.asarray(labels, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise TypeError(f"labels must be a numeric (N, C) array or tensor: {e}") from e
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or y.shape[0] == 0:
        raise ValueError(f"labels must be a non-empty (N, C) array, got shape {y.shape}")
    known = ~np.isnan(y)
    if np.any((y[known] < 0) | (y[known] > 1)):
        raise ValueError("labels must be in [0, 1] (or NaN for unknown)")
    pos = np.where(known, y, 0.0).sum(axis=0)
    neg = np.where(known, 1.0 - y, 0.0).sum(axis=0)
    defined = (pos > 0) & (neg > 0)
    w = np.where(defined, neg / np.where(defined, pos, 1.0), 1.0)
    w = np.minimum(w, float(max_weight))
    undefined = np.flatnonzero(~defined)
    if undefined.size:
        logger.info(
            "pos_weight_from_labels: labels %s have no known positive or negative: weight 1.0", undefined.tolist()
        )
    return torch.as_tensor(w, dtype=torch.float32)


def build_loss(
    task: str,
    name: str = "auto",
    pos_weight: Sequence[float] | float | torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    gamma: float = 2.0,
) -> nn.Module:
    """The masked loss for a task.

    Args:
        task: ``"multilabel"``, ``"binary"`` or ``"multiclass"``.
        name: ``"auto"`` (``bce`` for multilabel/binary, ``ce`` for multiclass), ``"bce"``, ``"focal"`` or
            ``"ce"`` (multiclass only). ``bce``/``focal`` on a multiclass task treat the one-hot targets as
            independent labels.
        pos_weight: positive weight(s) for ``bce``/``focal`` (not accepted with ``ce``).
        label_smoothing: label smoothing in [0, 1).
        gamma: focal-loss focusing parameter.

    Returns:
        :class:`MaskedBCEWithLogitsLoss`, :class:`MaskedFocalLoss` or :class:`MaskedCrossEntropyLoss`.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: expected one of {TASKS}")
    if name not in LOSS_NAMES:
        raise ValueError(f"unknown loss name {name!r}: expected one of {LOSS_NAMES}")
    if name == "auto":
        name = "ce" if task == "multiclass" else "bce"
    if name == "ce":
        if task != "multiclass":
            raise ValueError(f"loss 'ce' needs task='multiclass' (mutually exclusive classes), got task={task!r}")
        if pos_weight is not None:
            raise ValueError("pos_weight applies to 'bce'/'focal', not to 'ce' (softmax cross-entropy)")
        return MaskedCrossEntropyLoss(label_smoothing=label_smoothing)
    if name == "focal":
        return MaskedFocalLoss(gamma=gamma, pos_weight=pos_weight, label_smoothing=label_smoothing)
    return MaskedBCEWithLogitsLoss(pos_weight=pos_weight, label_smoothing=label_smoothing)

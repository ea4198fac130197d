"""An ensemble of k classifiers stored as one model file, used wherever a single :class:`Classifier` is.

:class:`Ensemble` holds k members of one architecture (trained from different seeds, or on patient-disjoint folds
of training + validation; see :mod:`medclass.ensembles`). Its ``forward`` returns the logits of the *mean member
probability* (multi-label / binary: ``logit(mean sigmoid)``; multi-class: ``log(mean softmax)``), so thresholds,
temperature scaling, ``predictions.csv``, export and the MONAI Label app treat it as one model. It carries its own
``thresholds`` and ``temperature`` buffers (the evaluate workflow sets them on the ensemble's output) and an
``_extra_state`` whose JSON is the first member's description plus ``ensemble``: ``{"members": k, "by": "seed" |
"fold", "seeds" / "folds": [...], "sources": [...]}``. Each member keeps its own ``_extra_state`` under
``members.<i>.``, so :func:`medclass.exports.model_from_file` rebuilds the ensemble from the file alone, and
``torch.load(..., weights_only=True)`` reads it.

:meth:`Ensemble.member_probabilities` gives the members' probabilities ``(k, B, C)``, whose spread is the ensemble's
uncertainty (:class:`medclass.inferers.PredictionInferer`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from medclass.networks.classifier import (
    Classifier,
    check_temperature,
    check_thresholds,
    decode_metadata,
    encode_metadata,
)

logger = logging.getLogger(__name__)

__all__ = ["ENSEMBLE_BY", "Ensemble", "logits_to_probabilities", "probabilities_to_logits"]

#: how the members of an ensemble were made
ENSEMBLE_BY = ("seed", "fold")
# what an ensemble passes on from its first member (all members are one architecture); read-only here
_DESCRIBED = ("arch", "spatial_dims", "in_channels", "image_size", "stem", "stem_stride", "width", "conv",
              "dilate_last_stage", "patch_size", "grid", "num_prefix_tokens", "pretrained", "dropout", "arch_kwargs",
              "settings", "fingerprint", "num_features")
# the member descriptions that must agree for the members to be one model
_SAME = ("arch", "spatial_dims", "in_channels", "num_classes", "image_size", "label_names", "stem", "width", "conv",
         "dilate_last_stage", "patch_size", "arch_kwargs")


def logits_to_probabilities(logits: torch.Tensor, multiclass: bool) -> torch.Tensor:
    """Probabilities of logits ``(B, C)`` or ``(C,)``: softmax over the classes for multi-class, sigmoid per label
    otherwise."""
    return torch.softmax(logits, dim=-1) if multiclass else torch.sigmoid(logits)


def probabilities_to_logits(probs: torch.Tensor, multiclass: bool) -> torch.Tensor:
    """Logits whose activation gives ``probs`` back: ``log(p)`` for multi-class (softmax), ``logit(p)`` otherwise.

    Probabilities are clipped to ``[1e-7, 1 - 1e-7]`` (multi-class: ``>= 1e-12``) so the logits stay finite.
    """
    if multiclass:
        return torch.log(probs.clamp_min(1e-12))
    p = probs.clamp(1e-7, 1.0 - 1e-7)
    return torch.log(p) - torch.log1p(-p)


class Ensemble(nn.Module):
    """k classifiers of one architecture whose mean probability is the prediction.

    Args:
        members: the member classifiers (at least 2, same architecture, labels and input).
        task: ``multilabel``, ``binary`` or ``multiclass`` (``None``: the first member's recorded task, else
            multi-label), which decides sigmoid or softmax.
        by: how the members were made: ``seed`` or ``fold``.
        details: what to record about them, e.g. ``{"seeds": [0, 1, 2]}`` or ``{"folds": [0, 1, 2]}``.

    Attributes:
        members: the ``nn.ModuleList`` of members.
        thresholds, temperature: buffers, as on :class:`Classifier` (on the ensemble's probability).
        label_names, num_classes: the members' (also ``arch``, ``spatial_dims``, ``image_size`` ... read from the
            first member).

    Raises:
        ValueError: fewer than 2 members, members that differ in architecture or labels, or an unknown ``by``.
    """

    def __init__(self, members: Sequence[nn.Module], task: str | None = None, by: str = "seed",
                 details: dict[str, Any] | None = None) -> None:
        super().__init__()
        members = list(members)
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        if by not in ENSEMBLE_BY:
            raise ValueError(f"ensemble members are made by one of {', '.join(ENSEMBLE_BY)}, got {by!r}")
        first = _describe(members[0])
        for i, m in enumerate(members[1:], 1):
            other = _describe(m)
            diff = [k for k in _SAME if first.get(k) != other.get(k)]
            if diff:
                raise ValueError(f"ensemble member {i} differs from member 0 in {', '.join(diff)}: "
                                 f"{ {k: other.get(k) for k in diff} } vs { {k: first.get(k) for k in diff} }")
        self.members = nn.ModuleList(members)
        self.task = str(task or getattr(members[0], "settings", {}).get("task") or "multilabel")
        self.multiclass = self.task == "multiclass"
        self.by = by
        self.details = dict(details or {})
        self.num_classes = int(members[0].num_classes)
        self.label_names = list(members[0].label_names)
        self.register_buffer("thresholds", members[0].thresholds.detach().clone())
        self.register_buffer("temperature", torch.ones(1))

    @classmethod
    def replicate(cls, member: nn.Module, k: int, task: str | None = None) -> Ensemble:
        """An ensemble of ``k`` copies of ``member`` (weights to be loaded from a model file)."""
        return cls([member] + [copy.deepcopy(member) for _ in range(int(k) - 1)], task=task)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in _DESCRIBED and "members" in self._modules:
                return getattr(self._modules["members"][0], name)
            raise

    # ------------------------------------------------------------------ forward
    def member_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Each member's probabilities ``(k, B, C)`` (sigmoid, or softmax for multi-class; no temperature)."""
        probs = []
        for m in self.members:
            logits = m(x).float()
            probs.append(logits_to_probabilities(logits, self.multiclass))
        return torch.stack(probs, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, C)`` of the mean member probability of an input ``(B, C_in, H, W[, D])``."""
        return probabilities_to_logits(self.member_probabilities(x).mean(0), self.multiclass)

    # ------------------------------------------------------------------ as a Classifier
    def set_thresholds(self, thresholds: float | Sequence[float] | torch.Tensor) -> None:
        """Set the decision thresholds (a float or one per class, each in [0, 1])."""
        with torch.no_grad():
            self.thresholds.copy_(check_thresholds(thresholds, self.num_classes).to(self.thresholds.device))

    def set_temperature(self, temperature: float) -> None:
        """Set the temperature (> 0) dividing the ensemble's logits before the activation."""
        with torch.no_grad():
            self.temperature.fill_(check_temperature(temperature))

    @torch.jit.unused
    def describe(self) -> dict[str, Any]:
        """The first member's description with ``ensemble`` (members, by, seeds / folds, sources) added."""
        meta = dict(self.members[0].describe())
        meta["ensemble"] = {"members": len(self.members), "by": self.by, **self.details}
        return meta

    @torch.jit.unused
    def get_extra_state(self) -> torch.Tensor:
        """The :meth:`describe` JSON as a uint8 tensor (see :meth:`Classifier.get_extra_state`)."""
        return encode_metadata(self.describe())

    @torch.jit.unused
    def set_extra_state(self, state: Any) -> None:
        """Read how the members were made; a file of another member count is refused."""
        meta = decode_metadata(state)
        info = meta.get("ensemble")
        if not isinstance(info, dict):
            raise ValueError("these weights are of a single model, not an ensemble: build it as a Classifier")
        if int(info.get("members", -1)) != len(self.members):
            raise ValueError(f"the file holds an ensemble of {info.get('members')} members, this one has "
                             f"{len(self.members)}")
        self.by = str(info.get("by", self.by))
        self.details = {k: v for k, v in info.items() if k not in ("members", "by")}

    def extra_repr(self) -> str:
        return f"members={len(self.members)}, by={self.by}, task={self.task}"


def _describe(member: nn.Module) -> dict[str, Any]:
    describe = getattr(member, "describe", None)
    if not callable(describe):
        raise TypeError(f"ensemble members must be medclass classifiers, got {type(member).__name__}")
    return describe()

"""The workflows' inferer: test-time augmentation (TTA), MC-dropout and ensembles averaged in probability space, with
the spread of the averaged probabilities kept as each prediction's uncertainty.

:class:`PredictionInferer` replaces MONAI's ``SimpleInferer``. With no TTA, no MC-dropout and a single model it
returns the network's logits unchanged. Otherwise it collects probabilities ``(N, B, C)``: every TTA view (the
input, its flips along each spatial axis, small shifts) times every ensemble member
(:meth:`medclass.networks.Ensemble.member_probabilities`) or MC-dropout sample, and returns the logits of their
mean (:func:`medclass.networks.probabilities_to_logits`), so thresholds chosen on the validation split (the evaluate
workflow's calibrator runs this inferer too) are chosen on the averaged output. Their standard deviation
``(B, C)`` is :attr:`PredictionInferer.last_spread`, which :class:`medclass.engines.Evaluator` puts in the engine
output as ``uncertainty`` (the ``uncertainty_<label>`` columns of ``predictions.csv``).

``tta: auto`` (the bundles' default) uses what the model file records: the evaluate workflow stores the TTA it chose
the thresholds with (``operating_points.tta``), so inference averages the same views (:func:`resolve_tta`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import torch

from medclass.networks.ensemble import logits_to_probabilities, probabilities_to_logits
from medclass.networks.modelfile import read_model_record
from medclass.vocab import optional, unwrap_model

logger = logging.getLogger(__name__)

__all__ = ["TTA_MODES", "PredictionInferer", "resolve_tta", "tta_views"]

#: test-time augmentations: none, flips along each spatial axis, shifts of ~3% of the side along each axis, both
TTA_MODES = ("none", "flip", "shift", "flip_shift")
_SHIFT_SHARE = 0.03  # a shift moves the image by this share of its side (at least one pixel)


def _shift(x: torch.Tensor, axis: int, step: int) -> torch.Tensor:
    """``x`` moved by ``step`` pixels along ``axis`` (a spatial dim), the border repeated (no wrap-around)."""
    n = x.shape[axis]
    s = max(-n + 1, min(n - 1, step))
    index = (torch.arange(n, device=x.device) - s).clamp(0, n - 1)
    return x.index_select(axis, index)


def tta_views(mode: str, spatial_dims: int) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """The view functions of a TTA mode, the identity first.

    ``flip``: the input and its flip along each spatial axis (3 views in 2D, 4 in 3D); ``shift``: the input and
    shifts of +-3% of the side (at least one pixel) along each axis (5 views in 2D, 7 in 3D); ``flip_shift``: both.

    Raises:
        ValueError: an unknown mode.
    """
    mode = str(mode).lower()
    if mode not in TTA_MODES:
        raise ValueError(f"tta must be one of {', '.join(TTA_MODES)} (or auto), got {mode!r}")
    views: list[Callable[[torch.Tensor], torch.Tensor]] = [lambda x: x]
    axes = range(2, 2 + int(spatial_dims))
    if mode in ("flip", "flip_shift"):
        views += [lambda x, a=a: torch.flip(x, dims=(a,)) for a in axes]
    if mode in ("shift", "flip_shift"):
        for a in axes:
            for sign in (1, -1):
                views.append(lambda x, a=a, sign=sign: _shift(x, a, sign * max(1, round(_SHIFT_SHARE * x.shape[a]))))
    return views


def resolve_tta(tta: Any, model_file: str | os.PathLike | None = None) -> str:
    """The TTA mode a workflow uses: ``tta`` itself (``null`` / ``none``: off), or for ``auto`` the mode the model
    file records (``operating_points.tta``, written by the evaluate workflow), ``none`` where it records none.

    Raises:
        ValueError: an unknown mode.
    """
    value = optional(tta)
    value = "none" if value is None else str(value).lower()  # `--tta none` reaches here as null (medclass run)
    if value == "auto":
        if model_file is None or not os.path.isfile(str(model_file)):
            return "none"
        points = read_model_record(model_file).get("operating_points") or {}
        value = str(points.get("tta") or "none").lower()
        if value != "none":
            logger.info("test-time augmentation %s, as recorded in %s", value, model_file)
    if value not in TTA_MODES:
        raise ValueError(f"tta must be one of auto, {', '.join(TTA_MODES)}, got {tta!r}")
    return value


def _dropouts(network: torch.nn.Module) -> list[torch.nn.Module]:
    kinds = (torch.nn.Dropout, torch.nn.Dropout1d, torch.nn.Dropout2d, torch.nn.Dropout3d, torch.nn.AlphaDropout)
    return [m for m in network.modules() if isinstance(m, kinds) and m.p > 0]


class PredictionInferer:
    """Averages TTA views, ensemble members and MC-dropout samples in probability space; keeps their spread.

    Args:
        task: ``multilabel``, ``binary`` or ``multiclass`` (sigmoid or softmax probabilities).
        tta: a mode of :data:`TTA_MODES`, or ``auto``: the one ``model``'s file records (:func:`resolve_tta`).
        mc_dropout: forward passes with dropout active (0: off). Needs a model with dropout (``dropout`` > 0 when
            it was built); without, it is refused.
        spatial_dims: 2 or 3 (``None``: from the input's rank).
        model: the workflow's model settings (:func:`medclass.networks.model_settings`), whose ``model_file`` ``auto``
            reads.

    Attributes:
        last_spread: ``(B, C)`` float32, the population standard deviation of the probabilities averaged for the last
            batch; ``None`` where only one was computed (single model, no TTA, no MC-dropout).
    """

    def __init__(self, task: str = "multilabel", tta: str = "none", mc_dropout: int = 0,
                 spatial_dims: int | None = None, model: dict[str, Any] | None = None) -> None:
        self.task = str(task)
        self.tta = resolve_tta(tta, (model or {}).get("model_file"))
        if isinstance(mc_dropout, bool) or not isinstance(mc_dropout, int) or mc_dropout < 0:
            raise ValueError(f"mc_dropout must be a whole number >= 0 (forward passes with dropout), got "
                             f"{mc_dropout!r}")
        self.mc_dropout = int(mc_dropout)
        self.spatial_dims = spatial_dims
        self.last_spread: torch.Tensor | None = None

    def _probabilities(self, network: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        net = unwrap_model(network)
        if hasattr(net, "member_probabilities"):
            return net.member_probabilities(x).float()
        logits = network(x).float()
        return logits_to_probabilities(logits, self.task == "multiclass")[None]

    def samples(self, inputs: torch.Tensor, network: torch.nn.Module) -> torch.Tensor:
        """Probabilities ``(N, B, C)`` of every view x member (x MC-dropout sample)."""
        dims = self.spatial_dims or inputs.dim() - 2
        views = tta_views(self.tta, dims)
        out = []
        drops = _dropouts(network) if self.mc_dropout else []
        if self.mc_dropout and not drops:
            raise ValueError("mc_dropout needs a model with dropout: train it with dropout > 0, or set mc_dropout: 0")
        try:
            for m in drops:
                m.train()
            for view in views:
                x = view(inputs)
                for _ in range(max(1, self.mc_dropout)):
                    out.append(self._probabilities(network, x))
        finally:
            for m in drops:
                m.eval()
        return torch.cat(out, 0)

    def single(self, network: torch.nn.Module) -> bool:
        """Whether this inferer's output is ``network``'s own logits of one forward pass (no TTA, MC-dropout or
        ensemble members to average)."""
        return self.tta == "none" and not self.mc_dropout and not hasattr(unwrap_model(network), "members")

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Logits ``(B, C)`` of the averaged probabilities (the network's own logits when there is one sample)."""
        self.last_spread = None
        if self.single(network) or network.training:
            return network(inputs, *args, **kwargs)
        probs = self.samples(inputs, network)
        self.last_spread = probs.std(0, unbiased=False)
        return probabilities_to_logits(probs.mean(0), self.task == "multiclass")

"""Ignite engines: MONAI's supervised trainer/evaluator with precision control on any device.

MONAI 1.6's engines only autocast on CUDA (``torch.autocast("cuda")``); on CPU, bf16 autocast gives
1.9-2.9x on training here, so these subclasses pick the autocast device from the engine's device.
The trainer also refuses to apply an optimizer step whose loss or gradients are not finite, and can augment each
training batch on the training device (``batch_transform``, e.g. :class:`medclass.transforms.BatchAugment`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils.enums import CommonKeys as Keys
from torch.nn.parallel import DistributedDataParallel

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: the engine output key of each prediction's uncertainty ``(C,)`` (the spread of the probabilities the inferer
#: averaged: ensemble members, TTA views, MC-dropout samples), where the inferer computes one
UNCERTAINTY = "uncertainty"


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """Map ``auto`` to a safe choice for the device.

    Args:
        precision: one of ``auto``, ``fp32``, ``bf16``, ``fp16``.
        device: the engine's device.

    Returns:
        ``bf16`` on CPU and on CUDA devices that support it, otherwise ``fp16`` on CUDA, ``fp32`` elsewhere.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    dev = torch.device(device)
    if precision != "auto":
        if precision == "fp16" and dev.type == "cpu":
            raise ValueError("precision 'fp16' is for CUDA devices; use 'bf16' or 'fp32' on CPU")
        return precision
    if dev.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if dev.type == "cpu":
        return "bf16"
    return "fp32"


def autocast_context(precision: str, device: torch.device | str):
    """An autocast context for ``precision`` on ``device`` (a no-op for fp32)."""
    dev = torch.device(device)
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=dev.type, dtype=dtype)


def _plain(x: Any) -> Any:
    """MetaTensor -> Tensor: metadata is not needed in the forward pass and slows every op."""
    as_tensor = getattr(x, "as_tensor", None)
    return as_tensor() if callable(as_tensor) else x


class Trainer(SupervisedTrainer):
    """``SupervisedTrainer`` with device-aware mixed precision and a non-finite step guard.

    Args:
        precision: ``auto`` (bf16 on CPU and recent GPUs, fp16 with loss scaling on older GPUs), ``fp32``,
            ``bf16`` or ``fp16``. The loss is always computed in fp32.
        grad_clip: clip the global gradient norm to this value (``None``: no clipping).
        max_nonfinite_steps: raise after this many consecutive steps with a non-finite loss or gradient
            (each such step is skipped, and the network's running statistics restored, so NaN never reaches the
            weights, the BatchNorm buffers or the metrics).
        fallback_after: after this many consecutive non-finite steps in bf16/fp16, continue the run in fp32
            (logged; ``precision_fallbacks`` counts it). bf16 with channels-last 3D convolutions gave infinite
            gradients from the first step for some initialisations here.
        channels_last: use channels-last memory format for the network and inputs.
        batch_transform: applied (without gradients) to the input batch ``(B, C, *spatial)`` of every training
            iteration, on the engine's device, after ``prepare_batch`` and before channels-last / autocast: the
            random augmentation of :class:`medclass.transforms.BatchAugment` (bundle key ``augment_on: batch``).
            ``None``: none. Labels are not passed to it. Evaluation engines never take one.
        kwargs: passed to ``monai.engines.SupervisedTrainer`` (``amp`` is managed here).
    """

    def __init__(
        self,
        *args: Any,
        precision: str = "auto",
        grad_clip: float | None = None,
        max_nonfinite_steps: int = 20,
        fallback_after: int = 3,
        channels_last: bool = False,
        batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.pop("amp", None)
        super().__init__(*args, amp=False, **kwargs)
        if batch_transform is not None and not callable(batch_transform):
            raise TypeError(f"batch_transform must be callable or None, got {type(batch_transform).__name__}")
        self.batch_transform = batch_transform
        self.precision = resolve_precision(precision, self.state.device)
        self.grad_clip = grad_clip
        self.max_nonfinite_steps = int(max_nonfinite_steps)
        self.channels_last = bool(channels_last)
        self.grad_scaler = (
            torch.amp.GradScaler("cuda") if self.precision == "fp16" and torch.device(self.state.device).type == "cuda" else None
        )
        self.fallback_after = int(fallback_after)
        self.nonfinite_steps = 0
        self.optimizer_stepped = False  # whether the last iteration updated the weights (LrSchedule reads it)
        self.precision_fallbacks = 0
        self._nonfinite_run = 0
        if self.channels_last:
            self.network.to(memory_format=_channels_last_format(self.network))
        logger.info("trainer precision: %s on %s", self.precision, self.state.device)

    def _iteration(self, engine: Trainer, batchdata: dict[str, torch.Tensor]) -> dict:  # type: ignore[override]
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)
        inputs, targets = _plain(batch[0]), _plain(batch[1])
        if engine.batch_transform is not None:
            with torch.no_grad():
                inputs = engine.batch_transform(inputs)
        if engine.channels_last and inputs.dim() in (4, 5):
            inputs = inputs.contiguous(memory_format=torch.channels_last if inputs.dim() == 4 else torch.channels_last_3d)
        engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: targets}
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        # running statistics change in the forward pass: keep them to undo a step that goes non-finite
        buffers = [b for b in engine.network.buffers() if b.is_floating_point()]
        saved = [b.detach().clone() for b in buffers]
        with autocast_context(engine.precision, engine.state.device):
            pred = engine.inferer(inputs, engine.network)
        pred = pred.float()
        engine.state.output[Keys.PRED] = pred
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        loss = engine.loss_function(pred, targets.float()).mean()
        engine.state.output[Keys.LOSS] = loss
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        if engine.grad_scaler is not None:
            engine.grad_scaler.scale(loss).backward()
            engine.grad_scaler.unscale_(engine.optimizer)
        else:
            loss.backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        params = [p for g in engine.optimizer.param_groups for p in g["params"] if p.grad is not None]
        max_norm = engine.grad_clip if engine.grad_clip is not None else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm) if params else torch.tensor(0.0)
        finite = bool(torch.isfinite(loss)) and bool(torch.isfinite(grad_norm))
        if engine.grad_scaler is not None:
            # the scaler itself skips steps with inf/nan gradients and lowers its scale
            scale = engine.grad_scaler.get_scale()
            engine.grad_scaler.step(engine.optimizer)
            engine.grad_scaler.update()
            engine.optimizer_stepped = engine.grad_scaler.get_scale() >= scale
        else:
            if finite:
                engine.optimizer.step()
            engine.optimizer_stepped = finite
        if finite:
            engine._nonfinite_run = 0
        else:
            engine.nonfinite_steps += 1
            engine._nonfinite_run += 1
            engine.optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                for b, s in zip(buffers, saved):
                    b.copy_(s)
            logger.warning(
                "epoch %d iteration %d: non-finite loss (%s) or gradient norm (%s) with %s; step skipped",
                engine.state.epoch, engine.state.iteration, float(loss.detach()), float(grad_norm), engine.precision,
            )
            if engine.precision != "fp32" and engine._nonfinite_run >= engine.fallback_after:
                logger.warning(
                    "%d consecutive non-finite steps with %s: continuing this run in fp32",
                    engine._nonfinite_run, engine.precision,
                )
                engine.precision, engine.grad_scaler = "fp32", None
                engine.precision_fallbacks += 1
                engine._nonfinite_run = 0
            elif engine._nonfinite_run >= engine.max_nonfinite_steps:
                raise FloatingPointError(
                    f"{engine._nonfinite_run} consecutive training steps had a non-finite loss or gradient "
                    f"(precision {engine.precision}); lower the learning rate, set precision: fp32, or check the input data"
                )
        engine.state.output[Keys.LOSS] = loss.detach()
        _broadcast_buffers(engine.network)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


def _broadcast_buffers(network: torch.nn.Module) -> None:
    """DDP: copy rank 0's floating-point buffers (BatchNorm statistics) to every rank after a step.

    DDP broadcasts buffers at the start of each forward, so the ranks' statistics differ only by their own last
    forward; syncing after the step makes validation, weight averaging and the saved model identical on every rank.
    """
    if not isinstance(network, DistributedDataParallel) or not network.broadcast_buffers:
        return
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return
    buffers = [b for b in network.module.buffers() if b.is_floating_point()]
    if not buffers:
        return
    with torch.no_grad():
        flat = torch.cat([b.detach().reshape(-1) for b in buffers])
        torch.distributed.broadcast(flat, src=0)
        offset = 0
        for b in buffers:
            b.copy_(flat[offset:offset + b.numel()].view_as(b))
            offset += b.numel()


class Evaluator(SupervisedEvaluator):
    """``SupervisedEvaluator`` with device-aware autocast for the forward pass; predictions come back in fp32.

    Where the inferer exposes ``last_spread`` (:class:`medclass.inferers.PredictionInferer` averaging ensemble
    members, TTA views or MC-dropout samples), the output also holds it as ``uncertainty`` ``(B, C)``.

    Args:
        precision: as for :class:`Trainer`.
        kwargs: passed to ``monai.engines.SupervisedEvaluator`` (``amp`` is managed here); ``None`` entries of
            ``val_handlers`` (handlers a config disables, e.g. the checkpoint loader with ``backend: onnxruntime``)
            are left out.
    """

    def __init__(self, *args: Any, precision: str = "auto", **kwargs: Any) -> None:
        kwargs.pop("amp", None)
        if kwargs.get("val_handlers") is not None:  # a handler disabled in the config (`_disabled_`) is None: left out
            handlers = kwargs["val_handlers"]
            kwargs["val_handlers"] = [h for h in (handlers if isinstance(handlers, (list, tuple)) else [handlers])
                                      if h is not None]
        super().__init__(*args, amp=False, **kwargs)
        self.precision = resolve_precision(precision, self.state.device)

    def _iteration(self, engine: Evaluator, batchdata: dict[str, torch.Tensor]) -> dict:  # type: ignore[override]
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)
        inputs, targets = _plain(batch[0]), batch[1]
        targets = _plain(targets) if targets is not None else None
        engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: targets}
        with engine.mode(engine.network), autocast_context(engine.precision, engine.state.device):
            pred = engine.inferer(inputs, engine.network)
        engine.state.output[Keys.PRED] = pred.float()
        spread = getattr(engine.inferer, "last_spread", None)
        if isinstance(spread, torch.Tensor):  # medclass.inferers.PredictionInferer: ensemble / TTA / MC-dropout
            engine.state.output[UNCERTAINTY] = spread.float()
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


def _channels_last_format(network: torch.nn.Module) -> torch.memory_format:
    for p in network.parameters():
        if p.dim() == 5:
            return torch.channels_last_3d
    return torch.channels_last


__all__ = ["Trainer", "Evaluator", "resolve_precision", "autocast_context", "PRECISIONS", "UNCERTAINTY"]

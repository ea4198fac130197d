"""What every saliency method shares: the target labels (:func:`resolve_targets`), the Grad-CAM layer
(:func:`resolve_target_layer`), the model's state while maps are computed (:func:`model_state`), ViT tokens as a
spatial grid (:func:`to_spatial`) and the per-map scaling to ``[0, 1]`` (:func:`normalize_maps`)."""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)

__all__ = [
    "PRECISION_DTYPES", "gather_scores", "model_label_names", "model_state", "normalize_maps", "plain",
    "resolve_target_layer", "resolve_targets", "to_spatial",
]


def plain(x: torch.Tensor) -> torch.Tensor:
    """A plain ``torch.Tensor`` (MONAI MetaTensors carry metadata that autograd and hooks need not see)."""
    if hasattr(x, "as_tensor"):
        x = x.as_tensor()
    return x


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Scale each map of ``(B, T, *spatial)`` to ``[0, 1]`` (min-max); a constant map becomes all zeros.

    Args:
        maps: raw saliency ``(B, T, *spatial)``; non-finite values count as 0.

    Returns:
        Float tensor of the same shape with values in ``[0, 1]``.
    """
    maps = torch.nan_to_num(maps.float(), nan=0.0, posinf=0.0, neginf=0.0)
    flat = maps.flatten(2)
    lo = flat.min(dim=2, keepdim=True).values
    hi = flat.max(dim=2, keepdim=True).values
    rng = hi - lo
    out = torch.where(rng > 0, (flat - lo) / rng.clamp_min(1e-12), torch.zeros_like(flat))
    return out.clamp_(0.0, 1.0).view_as(maps)


def model_label_names(model: nn.Module, num_outputs: int | None = None) -> list[str]:
    """The model's ``label_names``, else ``class_0 ..``."""
    names = getattr(model, "label_names", None)
    if names:
        return [str(n) for n in names]
    n = num_outputs if num_outputs is not None else getattr(model, "num_classes", 0)
    return [f"class_{i}" for i in range(int(n or 0))]


def resolve_targets(
    model: nn.Module,
    targets: Any,
    logits: torch.Tensor,
) -> torch.Tensor:
    """Target label indices ``(B, T)`` from the ``targets`` argument of :func:`saliency_maps`.

    Args:
        model: the classifier (its ``label_names`` resolve names).
        targets: ``None`` (the top-scoring label of each image, ``T = 1``), one label (index or name), a sequence
            of labels applied to every image, or an integer tensor ``(B, T)`` of per-image indices.
        logits: the model's output ``(B, num_classes)`` on the images.

    Returns:
        Long tensor ``(B, T)`` on ``logits.device``.

    Raises:
        ValueError: unknown label name, index out of range, empty target list, or a ``(B, T)`` tensor whose
            batch size differs from the images'.
        TypeError: a target that is neither an int nor a string.
    """
    b, n = logits.shape[0], logits.shape[1]
    if targets is None:
        return logits.argmax(dim=1, keepdim=True)
    names = model_label_names(model, n)
    if isinstance(targets, torch.Tensor) and targets.dim() == 2:
        if targets.shape[0] != b:
            raise ValueError(f"targets tensor has {targets.shape[0]} rows but the batch has {b} images")
        idx = targets.to(device=logits.device, dtype=torch.long)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
            raise ValueError(f"target indices must be in [0, {n - 1}], got {idx.tolist()}")
        if idx.shape[1] == 0:
            raise ValueError("targets is empty: name at least one label")
        return idx
    if isinstance(targets, (str, int)) or (isinstance(targets, torch.Tensor) and targets.dim() == 0):
        targets = [targets]
    out = []
    for t in list(targets):
        if isinstance(t, torch.Tensor):
            t = int(t)
        if isinstance(t, str):
            if t not in names:
                raise ValueError(f"unknown target label {t!r}; the model's labels are {names}")
            out.append(names.index(t))
        elif isinstance(t, int) and not isinstance(t, bool):
            if not 0 <= t < n:
                raise ValueError(f"target index {t} out of range for {n} outputs (labels {names})")
            out.append(t)
        else:
            raise TypeError(f"a target must be a label name or index, got {t!r}")
    if not out:
        raise ValueError("targets is empty: name at least one label, or pass None for the top-scoring one")
    return torch.tensor(out, dtype=torch.long, device=logits.device).unsqueeze(0).expand(b, -1).contiguous()


def resolve_target_layer(model: nn.Module, target_layer: str | nn.Module | None) -> tuple[str, nn.Module]:
    """The layer whose activations Grad-CAM uses: the model's default or a user-named one.

    Args:
        model: the classifier.
        target_layer: ``None`` (the model's ``target_layer`` attribute), a dotted module name, or a module of
            ``model``.

    Returns:
        ``(name, module)``.

    Raises:
        ValueError: a name that is not a module of ``model`` (the message lists the valid names), or no default.
    """
    modules = dict(model.named_modules())
    if isinstance(target_layer, nn.Module):
        for name, m in modules.items():
            if m is target_layer:
                return name, m
        raise ValueError("target_layer is a module that is not part of the model")
    if target_layer is None:
        target_layer = getattr(model, "target_layer", None)
        if not target_layer:
            raise ValueError(
                f"{type(model).__name__} has no default target_layer; name one of: {', '.join(n for n in modules if n)}"
            )
    if not isinstance(target_layer, str) or target_layer not in modules or not target_layer:
        valid = [n for n in modules if n]
        raise ValueError(f"target_layer {target_layer!r} is not a layer of the model; valid names: {', '.join(valid)}")
    return target_layer, modules[target_layer]


#: autocast dtype of each precision :func:`model_state` takes (``fp32``: no autocast)
PRECISION_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@contextlib.contextmanager
def model_state(model: nn.Module, precision: str = "fp32"):
    """Eval mode, gradients enabled, and autocast at ``precision`` (``fp32``: none; ``bf16``/``fp16``: the
    precision the model predicts at, so that maps explain that prediction); restores the train/eval mode of every
    submodule.

    Raises:
        ValueError: an unknown precision.
    """
    if precision not in PRECISION_DTYPES:
        raise ValueError(f"precision must be one of {list(PRECISION_DTYPES)}, got {precision!r}")
    dtype = PRECISION_DTYPES[precision]
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        dev = next((p.device.type for p in model.parameters()), "cpu")
        with torch.enable_grad(), torch.autocast(device_type=dev, dtype=dtype or torch.bfloat16,
                                                 enabled=dtype is not None):
            yield
    finally:
        for m, mode in modes.items():
            m.training = mode


def to_spatial(act: torch.Tensor, model: nn.Module, spatial_dims: int, layer_name: str) -> torch.Tensor:
    """Activations as a spatial map ``(B, K, *grid)``: CNN maps unchanged, ViT tokens reshaped to the patch grid."""
    if act.dim() == 2 + spatial_dims:
        return act
    grid = getattr(model, "grid", None)
    prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
    if act.dim() == 3 and grid is not None:
        n_tokens = act.shape[1] - prefix
        if n_tokens != math.prod(grid):
            raise ValueError(
                f"layer {layer_name!r} has {act.shape[1]} tokens; expected {prefix} + {math.prod(grid)} for the "
                f"patch grid {tuple(grid)}"
            )
        tok = act[:, prefix:]  # (B, N, hidden), C order over the grid
        return tok.transpose(1, 2).reshape(act.shape[0], act.shape[2], *grid)
    raise ValueError(
        f"layer {layer_name!r} outputs shape {tuple(act.shape)}, not a spatial map (B, K, *spatial) with "
        f"{spatial_dims} spatial dims nor ViT tokens; choose a convolutional stage or a ViT block"
    )


def gather_scores(logits: torch.Tensor, idx: torch.Tensor, t: int) -> torch.Tensor:
    """Sum over the batch of each image's target-``t`` logit (one backward gives every image's gradient)."""
    return logits.gather(1, idx[:, t : t + 1]).sum()

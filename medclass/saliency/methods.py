"""The saliency methods on a batch: class activation maps (Grad-CAM, Grad-CAM++, HiResCAM, LayerCAM), input
gradients (vanilla, SmoothGrad), occlusion and ViT attention rollout. Each returns raw maps on its own grid;
:func:`medclass.saliency.saliency_maps` upsamples and scales them."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from medclass.saliency.geometry import traced_geometry
from medclass.saliency.targets import gather_scores, resolve_targets, to_spatial

logger = logging.getLogger(__name__)

__all__ = [
    "CAM_WEIGHTINGS", "CamRecord", "cam", "cam_forward", "cam_maps", "input_gradients", "occlusion",
    "occlusion_windows", "rollout",
]


CAM_WEIGHTINGS = ("gradcam", "gradcam++", "hirescam", "layercam")
"""How :func:`cam` combines a layer's activations ``A`` and the target's gradient ``g`` on them: Grad-CAM (channel
means of ``g``), Grad-CAM++ (its higher-order channel weights), HiResCAM (``g * A`` per cell, Draelos & Carin 2020)
or LayerCAM (``relu(g) * A`` per cell, Jiang et al. 2021). The last two are scored by benchmarks/cam_variants.py,
not offered by :func:`saliency_maps`."""


class CamRecord(NamedTuple):
    """What one forward pass leaves for CAMs: :func:`cam_forward`'s result, read by :func:`cam_maps`.

    Attributes:
        logits: the model's output ``(B, num_classes)``, still attached to the graph from ``act``.
        act: the target layer's output as the layers after it saw it, with a graph from it to ``logits`` only.
        name: the target layer's name (for messages).
        grid_geometry: ``(stride, offset)`` per dim of every feature grid the pass made, keyed by grid shape
            (:func:`medclass.saliency.geometry.traced_geometry`).
    """

    logits: torch.Tensor
    act: torch.Tensor
    name: str
    grid_geometry: dict


def cam_forward(model, x, layer) -> CamRecord:
    """One forward pass of ``model`` on ``x`` that keeps what CAMs on ``layer`` = ``(name, module)`` need.

    The layers before the target layer run without recording gradients (a CAM needs the target score's gradient
    on the layer's output only, never on the input or the weights); from the layer on, gradients are recorded.
    The pass costs about what an inference pass costs, and its logits are the model's prediction, so one pass
    gives both the probabilities and the maps. Runs under the caller's autocast, if any.

    Raises:
        ValueError: the layer was not called in the forward pass.
    """
    name, module = layer
    store: dict[str, torch.Tensor] = {}

    def hook(_m, _i, out):
        first = out[0] if isinstance(out, (tuple, list)) else out
        torch.set_grad_enabled(True)  # restored when the enclosing no_grad block ends
        # a clone, not the leaf itself: the next layer may work in place (DenseNet's ReLU), as on the layer's output
        act = first.detach().requires_grad_(True).clone()
        store["act"] = act
        if isinstance(out, tuple):
            return (act, *out[1:])
        if isinstance(out, list):
            return [act, *out[1:]]
        return act

    handle = module.register_forward_hook(hook)
    try:
        with traced_geometry(model, x) as geo, torch.no_grad():
            logits = model(x)
    finally:
        handle.remove()
    if "act" not in store:
        raise ValueError(f"target layer {name!r} was not called in the forward pass")
    return CamRecord(logits, store["act"], name, geo)


def cam_maps(record: CamRecord, idx: torch.Tensor, weighting: str, model, spatial_dims: int, input_shape):
    """CAMs ``(B, T, *grid)`` of ``weighting`` (:data:`CAM_WEIGHTINGS`) for the target indices ``idx`` ``(B, T)``
    from a :func:`cam_forward` record, and the grid's traced ``(stride, offset)`` per dim (``None``: no traced
    grid; ``input_shape`` is the input's spatial shape)."""
    name = record.name
    spatial_act = to_spatial(record.act, model, spatial_dims, name).detach().float()
    cams = []
    n_t = idx.shape[1]
    with torch.enable_grad():
        for t in range(n_t):
            (g,) = torch.autograd.grad(gather_scores(record.logits, idx, t), record.act, retain_graph=t < n_t - 1)
            g = to_spatial(g, model, spatial_dims, name).float()
            red = tuple(range(2, g.dim()))
            if weighting == "gradcam++":
                g2, g3 = g.pow(2), g.pow(3)
                sum_a = spatial_act.sum(dim=red, keepdim=True)
                denom = 2 * g2 + sum_a * g3
                alpha = torch.where(g != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)), 0.0)
                w = (alpha * F.relu(g)).sum(dim=red, keepdim=True)
            elif weighting == "hirescam":
                w = g
            elif weighting == "layercam":
                w = F.relu(g)
            else:
                w = g.mean(dim=red, keepdim=True)
            cams.append(F.relu((w * spatial_act).sum(dim=1)))
    grid = tuple(spatial_act.shape[2:])
    geometry = record.grid_geometry.get(grid)
    if geometry is None and grid != tuple(input_shape):
        logger.debug("no convolution/pooling made the %s grid of %r: upsampling it uniformly", grid, name)
    return torch.stack(cams, dim=1), geometry


def cam(model, x, targets, layer, weighting: str, spatial_dims: int):
    """CAMs ``(B, T, *grid)`` of ``weighting`` (:data:`CAM_WEIGHTINGS`) on ``layer`` = ``(name, module)``, with the
    logits, the target indices and the grid's traced ``(stride, offset)`` per dim (``None``: no traced grid): one
    :func:`cam_forward` pass, then :func:`cam_maps`."""
    record = cam_forward(model, x, layer)
    idx = resolve_targets(model, targets, record.logits)
    maps, geometry = cam_maps(record, idx, weighting, model, spatial_dims, x.shape[2:])
    return maps, record.logits.detach(), idx, geometry


def input_gradients(model, x, targets, n_samples: int, noise: float, seed: int | None):
    """``|d score / d x|`` max over channels ``(B, T, *spatial)``; SmoothGrad averages ``n_samples`` noisy copies."""
    with torch.no_grad():
        logits = model(x)
    idx = resolve_targets(model, targets, logits)
    n_t = idx.shape[1]
    acc = torch.zeros((x.shape[0], n_t, *x.shape[2:]), dtype=torch.float32, device=x.device)
    gen = None
    if n_samples > 1:
        gen = torch.Generator(device=x.device)
        gen.manual_seed(0 if seed is None else int(seed))
    red = tuple(range(1, x.dim()))
    span = (x.amax(dim=red, keepdim=True) - x.amin(dim=red, keepdim=True)).clamp_min(1e-6)
    for _ in range(max(1, n_samples)):
        xi = x
        if n_samples > 1:
            xi = x + torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype) * (noise * span)
        xi = xi.detach().requires_grad_(True)
        out = model(xi)
        for t in range(n_t):
            (g,) = torch.autograd.grad(gather_scores(out, idx, t), xi, retain_graph=t < n_t - 1)
            acc[:, t] += g.abs().amax(dim=1)
    return acc / max(1, n_samples), logits, idx


def occlusion_windows(size: Sequence[int], window, stride) -> tuple[list[int], list[int]]:
    """The occlusion window and stride per spatial dim (defaults: size/8 in 2D, size/4 in 3D; half a window)."""
    nd = len(size)
    if window is None:
        div = 8 if nd <= 2 else 4
        window = [max(1, math.ceil(s / div)) for s in size]
    elif isinstance(window, int):
        window = [window] * nd
    window = [max(1, min(int(w), int(s))) for w, s in zip(window, size)]
    if stride is None:
        stride = [max(1, w // 2) for w in window]
    elif isinstance(stride, int):
        stride = [stride] * nd
    stride = [max(1, int(s)) for s in stride]
    if len(window) != nd or len(stride) != nd:
        raise ValueError(f"occlusion window {window} / stride {stride} must have one value per spatial dim ({nd})")
    return window, stride


def occlusion(model, x, targets, window, stride, chunk: int, baseline: str):
    """Drop of the target logit when a window is replaced by the baseline, averaged over the windows covering a
    pixel; negative averages (occlusion raised the score) become 0."""
    with torch.no_grad():
        logits = model(x)
        idx = resolve_targets(model, targets, logits)
        size = list(x.shape[2:])
        window, stride = occlusion_windows(size, window, stride)
        starts = []
        for s, w, st in zip(size, window, stride):
            pos = list(range(0, max(1, s - w + 1), st))
            if pos[-1] + w < s:
                pos.append(s - w)
            starts.append(pos)
        grids = torch.meshgrid(*[torch.tensor(p) for p in starts], indexing="ij")
        corners = torch.stack([g.reshape(-1) for g in grids], dim=1).tolist()
        red = tuple(range(2, x.dim()))
        if baseline == "mean":
            fill = x.mean(dim=red, keepdim=True)
        elif baseline == "zero":
            fill = torch.zeros_like(x[:, :, :1].flatten(2)[:, :, :1]).view(x.shape[0], x.shape[1], *[1] * len(size))
        elif baseline == "min":
            fill = x.amin(dim=red, keepdim=True)
        else:
            raise ValueError(f"occlusion baseline must be 'mean', 'zero' or 'min', got {baseline!r}")
        base = logits.gather(1, idx)  # (B, T)
        b, n_t = idx.shape
        total = torch.zeros((b, n_t, *size), dtype=torch.float32, device=x.device)
        count = torch.zeros((1, 1, *size), dtype=torch.float32, device=x.device)
        per_chunk = max(1, int(chunk) // max(1, b))
        for c0 in range(0, len(corners), per_chunk):
            cs = corners[c0 : c0 + per_chunk]
            xs = x.unsqueeze(0).repeat(len(cs), *[1] * x.dim())  # (W, B, C, *size)
            for k, corner in enumerate(cs):
                sl = tuple(slice(c, c + w) for c, w in zip(corner, window))
                region = (k, slice(None), slice(None)) + sl
                xs[region] = fill.expand_as(xs[region])
            out = model(xs.flatten(0, 1)).view(len(cs), b, -1)
            drop = base.unsqueeze(0) - out.gather(2, idx.unsqueeze(0).expand(len(cs), -1, -1))  # (W, B, T)
            for k, corner in enumerate(cs):
                sl = tuple(slice(c, c + w) for c, w in zip(corner, window))
                total[(slice(None), slice(None)) + sl] += drop[k].view(b, n_t, *[1] * len(size)).float()
                count[(0, 0) + sl] += 1
        # positive evidence only (like Grad-CAM's ReLU): windows whose removal raises the score count as 0
        return (total / count.clamp_min(1)).clamp_min(0.0), logits, idx


def rollout(model, x, targets, discard_ratio: float, head_fusion: str):
    """Attention rollout (Abnar & Zuidema 2020): product of head-averaged attention (+ identity) over the blocks;
    the class token's row over the patch tokens, reshaped to the patch grid. The map is the same for every target.
    """
    blocks = getattr(getattr(model, "backbone", None), "blocks", None)
    grid = getattr(model, "grid", None)
    if blocks is None or grid is None:
        raise ValueError("method 'rollout' needs a ViT classifier (arch='vit'); use 'gradcam' or 'occlusion' for CNNs")
    saved = []
    for blk in blocks:
        saved.append((blk.attn.save_attn, blk.attn.use_flash_attention))
        blk.attn.save_attn, blk.attn.use_flash_attention = True, False
    try:
        with torch.no_grad():
            logits = model(x)
            mats = [blk.attn.att_mat for blk in blocks]
    finally:
        for blk, (sa, fl) in zip(blocks, saved):
            blk.attn.save_attn, blk.attn.use_flash_attention = sa, fl
            blk.attn.att_mat = torch.Tensor()
    idx = resolve_targets(model, targets, logits)
    n = mats[0].shape[-1]
    eye = torch.eye(n, device=x.device)
    result = eye.unsqueeze(0).expand(x.shape[0], -1, -1)
    for att in mats:
        a = att.float().amax(dim=1) if head_fusion == "max" else att.float().mean(dim=1)
        if discard_ratio > 0:
            flat = a.flatten(1)
            k = int(flat.shape[1] * discard_ratio)
            if k > 0:
                low = flat.topk(k, dim=1, largest=False).indices
                flat = flat.scatter(1, low, 0.0)
                a = flat.view_as(a)
        a = a + eye
        a = a / a.sum(dim=-1, keepdim=True)
        result = a @ result
    prefix = int(getattr(model, "num_prefix_tokens", 1))
    cls_row = result[:, 0, prefix:]  # (B, N)
    m = cls_row.reshape(x.shape[0], 1, *grid)
    return m.expand(-1, idx.shape[1], *[-1] * len(grid)), logits, idx

"""Saliency maps for medclass classifiers: Grad-CAM, Grad-CAM++, occlusion, vanilla and SmoothGrad gradients,
and attention rollout for ViT, in 2D and 3D, for batches of any size.

One entry point, :func:`saliency_maps`, returns maps with exactly the input's spatial shape, values in ``[0, 1]``
(1 = most important for the target label), one map per image and target::

    from medclass.saliency import saliency_maps
    maps = saliency_maps(model, images, targets=["nodule"], method="gradcam")   # (B, 1, H, W[, D])

What sets it apart from ``monai.visualize`` and pytorch-grad-cam:

* batch size > 1 for every method (gradients of the summed target scores: in eval mode each image's score
  depends on that image only, so one backward pass gives every image's gradient);
* any label as target (multi-label outputs), not only the arg-max;
* the CAM is not flipped (high = important), 3D Grad-CAM++ works (all reductions run over every spatial dim);
* each CAM cell is placed at its receptive field's centre, traced through the network's convolutions and
  poolings (a padded stride-2 convolution centres output ``j`` on input ``2j``), not where an even tiling of the
  image would put it: on a ResNet stage of stride 8 the even tiling (``F.interpolate(align_corners=False)``, used
  by MONAI's CAMs and pytorch-grad-cam) is 3.5 pixels off per axis, enough to miss a thin or small finding;
* ViT token maps use the patch grid of the model (``image_size // patch_size`` per dim), never a fixed 14x14;
* the caller's model keeps its train/eval mode, hooks are removed, no ``.grad`` is left on parameters (gradients
  are taken with :func:`torch.autograd.grad`, never ``backward()``).

Scores are the target logits (before sigmoid/softmax) for the gradient methods and occlusion.

Maps are computed on the tensor the model sees (after preprocessing), so they live in the preprocessed image's
space: overlay them on that tensor, and for 3D save them with that tensor's affine
(:class:`medclass.handlers.SaliencyHandler` does both).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

logger = logging.getLogger(__name__)

__all__ = [
    "METHODS", "UPSAMPLING", "saliency_maps", "cell_centres", "resolve_targets", "resolve_target_layer",
    "normalize_maps",
]

METHODS = ("gradcam", "gradcam++", "occlusion", "vanilla", "smoothgrad", "rollout")
"""Saliency methods understood by :func:`saliency_maps` (``rollout`` is ViT only; the CAMs work on ViT tokens)."""


# ---------------------------------------------------------------------------------------------------- helpers
def _plain(x: torch.Tensor) -> torch.Tensor:
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


def _label_names(model: nn.Module, num_outputs: int | None = None) -> list[str]:
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
    names = _label_names(model, n)
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


@contextlib.contextmanager
def _model_state(model: nn.Module):
    """Eval mode, fp32 (no autocast), gradients enabled; restores the train/eval mode of every submodule."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        dev = next((p.device.type for p in model.parameters()), "cpu")
        with torch.enable_grad(), torch.autocast(device_type=dev, enabled=False):
            yield
    finally:
        for m, mode in modes.items():
            m.training = mode


def _to_spatial(act: torch.Tensor, model: nn.Module, spatial_dims: int, layer_name: str) -> torch.Tensor:
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


UPSAMPLING = ("receptive-field", "uniform")
"""How a feature grid is resized to the input: at each cell's receptive-field centre (the default), or assuming
cells tile the image evenly (``F.interpolate(..., align_corners=False)``, what MONAI's CAMs and pytorch-grad-cam
do)."""

Geometry = list[tuple[float, float]]
"""Per spatial dim ``(stride, offset)``: feature cell ``j`` is centred on input index ``offset + stride * j``."""


def _per_dim(value: Any, nd: int) -> tuple[float, ...]:
    if isinstance(value, (int, float)):
        return (float(value),) * nd
    value = tuple(float(v) for v in value)
    return value * nd if len(value) == 1 else value


def _is_sliding_window(m: nn.Module) -> bool:
    """A leaf convolution or pooling window (``nn.ConvNd``, ``nn.MaxPoolNd``, ``nn.AvgPoolNd``, ACSConv, ...)."""
    if not all(hasattr(m, a) for a in ("kernel_size", "stride", "padding")):
        return False
    return not any(_is_sliding_window(c) for c in m.children())


@contextlib.contextmanager
def _trace_geometry(model: nn.Module, x: torch.Tensor):
    """Record, during one forward pass, where the cells of every feature grid lie in the input.

    Each convolution/pooling window called maps its output cell ``j`` to its input index
    ``stride * j - padding + dilation * (kernel - 1) / 2``; composed along the forward pass this gives the
    ``(stride, offset)`` of every grid the network makes, keyed by the grid's spatial shape (parallel branches of
    one network, e.g. a ResNet block and its strided shortcut, agree on it). Yields the dict, filled after the
    forward pass.

    Why it matters: a padded stride-2 convolution or max-pool centres output ``j`` on input ``2j``, not on
    ``2j + 0.5`` as an even tiling would; over a stride-8 ResNet stage the difference is 3.5 pixels (per axis),
    enough for an upsampled CAM to peak beside a small finding. DenseNet's 2x2 average-pooling transitions and ViT
    patch embeddings do tile evenly.
    """
    nd = x.dim() - 2
    geo: dict[tuple[int, ...], Geometry] = {tuple(x.shape[2:]): [(1.0, 0.0)] * nd}

    def hook(m, inp, out):
        xin = inp[0] if isinstance(inp, (tuple, list)) and inp else None
        if not isinstance(xin, torch.Tensor) or not isinstance(out, torch.Tensor) or xin.dim() != nd + 2:
            return
        s_in, s_out = tuple(xin.shape[2:]), tuple(out.shape[2:])
        g_in = geo.get(s_in)
        if g_in is None or s_out in geo or out.dim() != nd + 2:
            return
        k = _per_dim(m.kernel_size, nd)
        st = _per_dim(m.stride if m.stride is not None else m.kernel_size, nd)  # pooling: stride None = kernel
        d = _per_dim(getattr(m, "dilation", 1), nd)
        pad = m.padding
        if isinstance(pad, str):  # 'same' centres each output on its input position, 'valid' has none
            pad = [di * (ki - 1) / 2 for di, ki in zip(d, k)] if pad == "same" else [0.0] * nd
        p = _per_dim(pad, nd)
        geo[s_out] = [
            (gs * si, go + gs * (di * (ki - 1) / 2 - pi)) for (gs, go), si, di, ki, pi in zip(g_in, st, d, k, p)
        ]

    handles = [m.register_forward_hook(hook) for m in model.modules() if _is_sliding_window(m)]
    try:
        yield geo
    finally:
        for h in handles:
            h.remove()


def cell_centres(
    model: nn.Module, images: torch.Tensor, target_layer: str | nn.Module | None = None
) -> list[list[float]]:
    """Per spatial dim, the input index on which each cell of the Grad-CAM layer's grid is centred.

    Args:
        model: the classifier.
        images: an input ``(B, C, *spatial)`` of the size the maps are for (one image is enough).
        target_layer: as for :func:`saliency_maps` (``None``: the model's own).

    Returns:
        One list per spatial dim: ``offset + stride * j`` for every cell ``j`` (the grid placement Grad-CAM uses).
    """
    name, module = resolve_target_layer(model, target_layer)
    nd = images.dim() - 2
    store: dict[str, torch.Tensor] = {}
    handle = module.register_forward_hook(lambda _m, _i, out: store.__setitem__("act", out))
    try:
        with _model_state(model), torch.no_grad(), _trace_geometry(model, images) as geo:
            model(_plain(images).float())
    finally:
        handle.remove()
    act = store["act"][0] if isinstance(store["act"], (tuple, list)) else store["act"]
    grid = tuple(act.shape[2:]) if act.dim() == nd + 2 else tuple(getattr(model, "grid", None) or ())
    geometry = geo.get(grid) or [((s / g), (s / g - 1) / 2) for s, g in zip(images.shape[2:], grid)]
    return [[off + stride * j for j in range(g)] for g, (stride, off) in zip(grid, geometry)]


def _upsample(maps: torch.Tensor, size: Sequence[int], geometry: Geometry | None = None) -> torch.Tensor:
    """Resize ``(B, T, *grid)`` to ``(B, T, *size)`` by linear interpolation.

    Args:
        maps: maps on a feature grid.
        size: the input's spatial size.
        geometry: per dim ``(stride, offset)`` of the grid's cells in the input (:func:`_trace_geometry`); the
            value at input index ``i`` is interpolated at grid position ``(i - offset) / stride``, constant beyond
            the outer cells' centres. ``None``: cells tile the input evenly (``align_corners=False``).
    """
    if tuple(maps.shape[2:]) == tuple(size):
        return maps
    if geometry is None:
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
        return F.interpolate(maps, size=tuple(int(s) for s in size), mode=mode, align_corners=False)
    out = maps
    for axis, (n_out, (stride, offset)) in enumerate(zip(size, geometry)):
        dim = axis + 2
        n_in = out.shape[dim]
        pos = ((torch.arange(int(n_out), dtype=torch.float64, device=maps.device) - offset) / stride).clamp(
            0, n_in - 1
        )
        i0 = pos.floor().long().clamp(0, n_in - 1)
        i1 = (i0 + 1).clamp(max=n_in - 1)
        w = (pos - i0).to(out.dtype).view([-1 if a == dim else 1 for a in range(out.dim())])
        out = out.index_select(dim, i0) * (1 - w) + out.index_select(dim, i1) * w
    return out


def _gather_scores(logits: torch.Tensor, idx: torch.Tensor, t: int) -> torch.Tensor:
    """Sum over the batch of each image's target-``t`` logit (one backward gives every image's gradient)."""
    return logits.gather(1, idx[:, t : t + 1]).sum()


# ---------------------------------------------------------------------------------------------------- methods
CAM_WEIGHTINGS = ("gradcam", "gradcam++", "hirescam", "layercam")
"""How :func:`_cam` combines a layer's activations ``A`` and the target's gradient ``g`` on them: Grad-CAM (channel
means of ``g``), Grad-CAM++ (its higher-order channel weights), HiResCAM (``g * A`` per cell, Draelos & Carin 2020)
or LayerCAM (``relu(g) * A`` per cell, Jiang et al. 2021). The last two are scored by benchmarks/cam_variants.py,
not offered by :func:`saliency_maps`."""


def _cam(model, x, targets, layer, weighting: str, spatial_dims: int):
    """CAMs ``(B, T, *grid)`` of ``weighting`` (:data:`CAM_WEIGHTINGS`) on ``layer`` = ``(name, module)``, with the
    logits, the target indices and the grid's traced ``(stride, offset)`` per dim (``None``: no traced grid)."""
    name, module = layer
    store: dict[str, torch.Tensor] = {}

    def hook(_m, _i, out):
        store["act"] = out[0] if isinstance(out, (tuple, list)) else out

    handle = module.register_forward_hook(hook)
    try:
        with _trace_geometry(model, x) as geo:
            logits = model(x)
    finally:
        handle.remove()
    if "act" not in store:
        raise ValueError(f"target layer {name!r} was not called in the forward pass")
    act = store["act"]
    if not act.requires_grad:
        raise ValueError(f"target layer {name!r} output does not depend on the input (no gradient)")
    idx = resolve_targets(model, targets, logits)
    spatial_act = _to_spatial(act, model, spatial_dims, name).detach().float()
    cams = []
    n_t = idx.shape[1]
    for t in range(n_t):
        (g,) = torch.autograd.grad(_gather_scores(logits, idx, t), act, retain_graph=t < n_t - 1)
        g = _to_spatial(g, model, spatial_dims, name).float()
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
    geometry = geo.get(tuple(spatial_act.shape[2:]))
    if geometry is None and tuple(spatial_act.shape[2:]) != tuple(x.shape[2:]):
        logger.debug("no convolution/pooling made the %s grid of %r: upsampling it uniformly",
                     tuple(spatial_act.shape[2:]), name)
    return torch.stack(cams, dim=1), logits.detach(), idx, geometry


def _input_gradients(model, x, targets, n_samples: int, noise: float, seed: int | None):
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
            (g,) = torch.autograd.grad(_gather_scores(out, idx, t), xi, retain_graph=t < n_t - 1)
            acc[:, t] += g.abs().amax(dim=1)
    return acc / max(1, n_samples), logits, idx


def _windows(size: Sequence[int], window, stride) -> tuple[list[int], list[int]]:
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


def _occlusion(model, x, targets, window, stride, chunk: int, baseline: str):
    """Drop of the target logit when a window is replaced by the baseline, averaged over the windows covering a
    pixel; negative averages (occlusion raised the score) become 0."""
    with torch.no_grad():
        logits = model(x)
        idx = resolve_targets(model, targets, logits)
        size = list(x.shape[2:])
        window, stride = _windows(size, window, stride)
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


def _rollout(model, x, targets, discard_ratio: float, head_fusion: str):
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


# ---------------------------------------------------------------------------------------------------- API
def saliency_maps(
    model: nn.Module,
    images: torch.Tensor,
    targets: Any = None,
    method: str = "gradcam",
    target_layer: str | nn.Module | None = None,
    **method_kwargs: Any,
) -> torch.Tensor:
    """Saliency maps of a batch for chosen target labels.

    Args:
        model: a medclass :class:`~medclass.networks.Classifier` (densenet*/resnet*/vit, 2D or 3D); ``occlusion``,
            ``vanilla`` and ``smoothgrad`` work with any module returning logits ``(B, num_classes)``.
        images: float tensor ``(B, C, H, W[, D])`` on the model's device (a MetaTensor is fine), preprocessed as
            for the model.
        targets: ``None`` (each image's top-scoring label, ``T = 1``); a label name or index, or a sequence of
            them applied to every image (``T = len(targets)``); or a long tensor ``(B, T)`` of per-image indices.
        method: ``"gradcam"``, ``"gradcam++"`` (CNN feature maps, or ViT patch tokens reshaped to the patch
            grid), ``"occlusion"`` (any model), ``"vanilla"`` / ``"smoothgrad"`` (input gradients, any model) or
            ``"rollout"`` (ViT attention rollout; target independent).
        target_layer: Grad-CAM layer: ``None`` for the model's own (``model.target_layer``: densenet
            ``features.norm5``, resnet ``layer3``, vit last block ``norm1``), a dotted module name or a module.
        **method_kwargs: ``gradcam``/``gradcam++``: ``upsample``, how the layer's grid is resized to the input:
            ``"receptive-field"`` (default: each cell's value is placed at its receptive field's centre, traced
            through the network's convolutions and poolings) or ``"uniform"`` (cells tile the input evenly, as in
            MONAI's CAMs and pytorch-grad-cam; off by half a stride minus half a pixel per axis on ResNets).
            ``occlusion``: ``window`` (int or one per dim; default size/8 in 2D, size/4 in 3D),
            ``stride`` (default window/2), ``baseline`` (``"mean"``, ``"zero"``, ``"min"``), ``chunk`` (images per
            forward, default 64). ``smoothgrad``: ``n_samples`` (16), ``noise`` (0.15 of each image's value range),
            ``seed`` (0). ``rollout``: ``discard_ratio`` (0.0), ``head_fusion`` (``"mean"`` or ``"max"``).

    Returns:
        Float32 CPU tensor ``(B, T, H, W[, D])`` (the input's spatial shape) with values in ``[0, 1]``, high =
        important for the target (each map min-max scaled; an all-zero map means no evidence).

    Raises:
        ValueError: unknown method or option, wrong ``target_layer`` (lists the valid names), unknown target
            label, an image tensor of the wrong rank, ``rollout`` on a CNN.
        TypeError: ``images`` is not a tensor.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a tensor (B, C, *spatial), got {type(images).__name__}")
    method = str(method).lower().replace("_", "").replace("-", "")
    aliases = {"gradcampp": "gradcam++", "gradcamplusplus": "gradcam++", "gradcam": "gradcam"}
    method = aliases.get(method, method)
    if method not in METHODS:
        raise ValueError(f"unknown saliency method {method!r}; choose one of {list(METHODS)}")
    spatial_dims = int(getattr(model, "spatial_dims", images.dim() - 2))
    if images.dim() != spatial_dims + 2:
        raise ValueError(
            f"images must be (B, C, *spatial) with {spatial_dims} spatial dims, got shape {tuple(images.shape)}"
        )
    allowed = {
        "gradcam": {"upsample"},
        "gradcam++": {"upsample"},
        "occlusion": {"window", "stride", "baseline", "chunk"},
        "vanilla": set(),
        "smoothgrad": {"n_samples", "noise", "seed"},
        "rollout": {"discard_ratio", "head_fusion"},
    }[method]
    unknown = set(method_kwargs) - allowed
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for method {method!r}; allowed: {sorted(allowed)}")
    if target_layer is not None and method not in ("gradcam", "gradcam++"):
        logger.debug("target_layer is ignored by method %s", method)
    upsample = str(method_kwargs.get("upsample", "receptive-field"))
    if upsample not in UPSAMPLING:
        raise ValueError(f"upsample must be one of {list(UPSAMPLING)}, got {upsample!r}")
    size = tuple(images.shape[2:])
    param = next(model.parameters(), None)
    x = _plain(images).detach().to(dtype=torch.float32)
    if param is not None:
        x = x.to(param.device)
    x = x.clone()
    geometry = None
    with _model_state(model):
        if method in ("gradcam", "gradcam++"):
            layer = resolve_target_layer(model, target_layer)
            x.requires_grad_(True)
            raw, _, _, geometry = _cam(model, x, targets, layer, method, spatial_dims)
            if upsample == "uniform":
                geometry = None
        elif method == "vanilla":
            raw, _, _ = _input_gradients(model, x, targets, 1, 0.0, None)
        elif method == "smoothgrad":
            raw, _, _ = _input_gradients(
                model,
                x,
                targets,
                int(method_kwargs.get("n_samples", 16)),
                float(method_kwargs.get("noise", 0.15)),
                method_kwargs.get("seed", 0),
            )
        elif method == "occlusion":
            raw, _, _ = _occlusion(
                model,
                x,
                targets,
                method_kwargs.get("window"),
                method_kwargs.get("stride"),
                int(method_kwargs.get("chunk", 64)),
                str(method_kwargs.get("baseline", "mean")),
            )
        else:
            fusion = str(method_kwargs.get("head_fusion", "mean"))
            if fusion not in ("mean", "max"):
                raise ValueError(f"head_fusion must be 'mean' or 'max', got {fusion!r}")
            raw, _, _ = _rollout(model, x, targets, float(method_kwargs.get("discard_ratio", 0.0)), fusion)
        maps = normalize_maps(_upsample(raw.detach().float(), size, geometry))
    return maps.cpu().contiguous()

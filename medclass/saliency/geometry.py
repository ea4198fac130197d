"""Where a feature grid's cells lie in the input: traced through the network's convolutions and poolings
(:func:`trace_geometry`, :func:`cell_centres`), and maps upsampled from a grid to the input by those positions
(:func:`upsample`)."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from medclass.saliency.targets import model_state, plain, resolve_target_layer

__all__ = [
    "UPSAMPLING", "Geometry", "cell_centres", "is_sliding_window", "per_dim", "resample_axis_aligned", "trace_geometry",
    "traced_geometry", "upsample",
]


UPSAMPLING = ("receptive-field", "uniform")
"""How a feature grid is resized to the input: at each cell's receptive-field centre (the default), or assuming
cells tile the image evenly (``F.interpolate(..., align_corners=False)``, what MONAI's CAMs and pytorch-grad-cam
do)."""

Geometry = list[tuple[float, float]]
"""Per spatial dim ``(stride, offset)``: feature cell ``j`` is centred on input index ``offset + stride * j``."""


def per_dim(value: Any, nd: int) -> tuple[float, ...]:
    """A kernel / stride / padding value as one float per spatial dim."""
    if isinstance(value, (int, float)):
        return (float(value),) * nd
    value = tuple(float(v) for v in value)
    return value * nd if len(value) == 1 else value


def is_sliding_window(m: nn.Module) -> bool:
    """A leaf convolution or pooling window (``nn.ConvNd``, ``nn.MaxPoolNd``, ``nn.AvgPoolNd``, ACSConv, ...)."""
    if not all(hasattr(m, a) for a in ("kernel_size", "stride", "padding")):
        return False
    return not any(is_sliding_window(c) for c in m.children())


@contextlib.contextmanager
def trace_geometry(model: nn.Module, x: torch.Tensor):
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
        k = per_dim(m.kernel_size, nd)
        st = per_dim(m.stride if m.stride is not None else m.kernel_size, nd)  # pooling: stride None = kernel
        d = per_dim(getattr(m, "dilation", 1), nd)
        pad = m.padding
        if isinstance(pad, str):  # 'same' centres each output on its input position, 'valid' has none
            pad = [di * (ki - 1) / 2 for di, ki in zip(d, k)] if pad == "same" else [0.0] * nd
        p = per_dim(pad, nd)
        geo[s_out] = [
            (gs * si, go + gs * (di * (ki - 1) / 2 - pi)) for (gs, go), si, di, ki, pi in zip(g_in, st, d, k, p)
        ]

    handles = [m.register_forward_hook(hook) for m in model.modules() if is_sliding_window(m)]
    try:
        yield geo
    finally:
        for h in handles:
            h.remove()


#: grids traced per model and input shape (:func:`traced_geometry`); entries go with their model
_TRACED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def traced_geometry(model: nn.Module, x: torch.Tensor):
    """:func:`trace_geometry` once per model and input shape: the grid positions depend on the network's layers
    and the input's shape only, so later passes reuse them and run without the tracing hooks (about 5 ms per pass
    of a DenseNet-121 at 224 px, 10% of its inference pass). Yields the dict, complete after the first pass."""
    shape = tuple(x.shape[2:])
    known = _TRACED.get(model, {}).get(shape)
    if known is not None:
        yield known
        return
    with trace_geometry(model, x) as geo:
        yield geo
    _TRACED.setdefault(model, {})[shape] = geo


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
        with model_state(model), torch.no_grad(), trace_geometry(model, images) as geo:
            model(plain(images).float())
    finally:
        handle.remove()
    act = store["act"][0] if isinstance(store["act"], (tuple, list)) else store["act"]
    grid = tuple(act.shape[2:]) if act.dim() == nd + 2 else tuple(getattr(model, "grid", None) or ())
    geometry = geo.get(grid) or [((s / g), (s / g - 1) / 2) for s, g in zip(images.shape[2:], grid)]
    return [[off + stride * j for j in range(g)] for g, (stride, off) in zip(grid, geometry)]


def upsample(maps: torch.Tensor, size: Sequence[int], geometry: Geometry | None = None) -> torch.Tensor:
    """Resize ``(B, T, *grid)`` to ``(B, T, *size)`` by linear interpolation.

    Args:
        maps: maps on a feature grid.
        size: the input's spatial size.
        geometry: per dim ``(stride, offset)`` of the grid's cells in the input (:func:`trace_geometry`); the
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


def resample_axis_aligned(image: torch.Tensor, src_affine: Any, dst_affine: Any,
                          dst_shape: Sequence[int]) -> torch.Tensor | None:
    """``image`` ``(C, *src)`` on the voxel grid of ``dst_affine`` / ``dst_shape`` by linear interpolation (zero
    outside the source), when each destination axis runs along one source axis (a scale, shift, flip or axis
    swap: how preprocessing resizes and re-orients an image); ``None`` when the grids are rotated or sheared
    against each other (use ``monai.transforms.ResampleToMatch`` then).

    The result equals ``ResampleToMatch(mode="bilinear", padding_mode="zeros")`` (checked by the tests) at a
    fraction of its cost: one small weight matrix per axis instead of a sampling grid the size of the output
    (a 224 px map onto a 1024 px radiograph: about 5 ms instead of 13 ms on 2 cores).

    Args:
        image: ``(C, *src)`` float tensor.
        src_affine, dst_affine: voxel-to-world matrices ``(N+1, N+1)`` or larger (MONAI keeps 4x4 for 2D images;
            the extra axes must not mix with the spatial ones).
        dst_shape: the destination's spatial shape.
    """
    nd = image.dim() - 1
    src = torch.as_tensor(src_affine, dtype=torch.float64)
    dst = torch.as_tensor(dst_affine, dtype=torch.float64)
    if src.shape != dst.shape or src.shape[0] < nd + 1 or len(dst_shape) != nd:
        return None
    m = torch.linalg.inv(src) @ dst  # destination index -> source index
    r = m.shape[0] - 1
    lin, shift = m[:nd, :nd], m[:nd, r]
    if r > nd and bool((m[:nd, nd:r].abs() > 1e-9).any()):
        return None
    nonzero = lin.abs() > 1e-9
    if not (bool((nonzero.sum(0) == 1).all()) and bool((nonzero.sum(1) == 1).all())):
        return None
    out = image.to(torch.float32)
    order = []
    for s in range(nd):  # source axis s: which destination axis runs along it, and how
        d = int(nonzero[s].nonzero()[0])
        n_in, n_out = out.shape[s + 1], int(dst_shape[d])
        pos = lin[s, d] * torch.arange(n_out, dtype=torch.float64) + shift[s]
        i0 = pos.floor()
        frac = pos - i0
        weights = torch.zeros(n_out, n_in + 2, dtype=torch.float64)  # columns 0 and n_in + 1: outside (zero)
        rows = torch.arange(n_out)
        for idx, w in ((i0, 1 - frac), (i0 + 1, frac)):
            col = (idx.clamp(-1, n_in) + 1).long()  # -1 and n_in land in the outside columns
            weights.index_put_((rows, col), w, accumulate=True)
        out = torch.movedim(torch.tensordot(out, weights[:, 1:-1].float(), dims=([s + 1], [1])), -1, s + 1)
        order.append(d)
    # axis s + 1 now holds destination axis order[s]: put them in destination order
    perm = [0] + [1 + order.index(d) for d in range(nd)]
    return out.permute(perm).to(image.dtype).contiguous()

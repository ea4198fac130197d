"""Start a 3D classifier from a 2D checkpoint: inflate 2D kernels to 3D (I3D), or map them onto ACS convolutions.

Carreira & Zisserman, "Quo Vadis, Action Recognition?" (CVPR 2017) inflate a 2D kernel ``(O, I, kH, kW)`` by
repeating it ``kD`` times along depth and dividing by ``kD`` (``mode="i3d"``): a volume that is constant along depth
then gives, away from the depth borders, exactly the 2D activations. ``mode="center"`` puts the 2D kernel in the
central depth slice (zeros elsewhere): each slice is filtered as in 2D. ``mode="acs"`` maps the 2D kernels 1:1 onto
a model built with ``conv="acs"`` (:mod:`medclass.networks.acs`).

Depth is the last spatial axis (medclass/MONAI volumes are ``(B, C, H, W, D)``): a 2D kernel ``(kH, kW)`` becomes
``(kH, kW, kD)``, i.e. it filters the ``(H, W)`` planes of the volume as it filtered the 2D images.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from medclass.networks.checkpoint import MODEL_LEVEL_KEYS, state_and_source
from medclass.networks.checkpoint import fmt_keys as _fmt
from medclass.networks.classifier import Classifier, decode_metadata, encode_metadata

logger = logging.getLogger(__name__)

__all__ = ["INFLATE_MODES", "inflate_2d_to_3d"]

INFLATE_MODES: tuple[str, ...] = ("i3d", "center", "acs")
"""Modes of :func:`inflate_2d_to_3d` (and ``inflate=`` of ``load_weights`` / ``build_classifier``)."""


def check_inflate_mode(mode: Any) -> str:
    """``mode`` if it is one of :data:`INFLATE_MODES`, else ValueError."""
    if mode not in INFLATE_MODES:
        raise ValueError(f"unknown inflate mode {mode!r}: expected one of {INFLATE_MODES}")
    return mode


def _inflate_kernel(w: torch.Tensor, kd: int, mode: str) -> torch.Tensor:
    """A 2D kernel ``(O, I, kH, kW)`` as a 3D kernel ``(O, I, kH, kW, kd)``."""
    if mode == "center":
        out = w.new_zeros((*w.shape, kd))
        out[..., kd // 2] = w
        return out
    # i3d (and 1x1 kernels of any mode): repeat along depth, divide by the depth
    return (w.unsqueeze(-1).expand(*w.shape, kd) / kd).contiguous()


def _inflate_state(
    state: Mapping[str, Any],
    own: Mapping[str, Any] | None,
    mode: str,
    depth: int | None = None,
) -> tuple[dict[str, Any], list[tuple[str, tuple[int, ...], tuple[int, ...]]], list[str]]:
    """Inflate the 4-D kernels of a 2D state to the shapes of ``own`` (a 3D model's state).

    Tensors of the same shape are copied as they are (norms, heads, thresholds, ACS kernels), keys ``own`` lacks are
    passed through. With ``own=None`` every 4-D tensor is inflated to depth ``depth`` (1x1 kernels to depth 1; with
    ``mode="acs"`` kernels larger than 1x1 stay 2D-shaped for ACS convolutions).

    Returns:
        ``(state, mismatched, inflated)``: the new state (mis-shaped tensors left as they were), the
        ``(key, checkpoint shape, model shape)`` that are not a pure inflation, and the inflated keys.

    Raises:
        ValueError: ``mode="acs"`` and the model has a full 3D kernel (it was not built with ``conv="acs"``).
    """
    out: dict[str, Any] = {}
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
    inflated: list[str] = []
    for key, value in state.items():
        if not isinstance(value, torch.Tensor) or key.endswith("_extra_state"):
            out[key] = value
            continue
        shape = tuple(value.shape)
        if own is None:
            if value.dim() != 4:
                out[key] = value
                continue
            flat = shape[2:] == (1, 1)
            if mode == "acs" and not flat:
                out[key] = value
                continue
            out[key] = _inflate_kernel(value, 1 if flat else int(depth), mode)  # type: ignore[arg-type]
            inflated.append(key)
            continue
        if key not in own or not isinstance(own[key], torch.Tensor):
            out[key] = value
            continue
        target = tuple(own[key].shape)
        if shape == target:
            out[key] = value
        elif value.dim() == 4 and len(target) == 5 and target[:4] == shape:
            kd = target[4]
            if mode == "acs" and kd > 1:
                raise ValueError(
                    f"mode='acs' maps 2D kernels 1:1 onto ACS convolutions, but the model's {key} is a full 3D "
                    f"kernel {list(target)} (checkpoint {list(shape)}): build the model with conv='acs' "
                    "(or medclass.networks.convert_to_acs), or inflate with mode='i3d' or 'center'"
                )
            out[key] = _inflate_kernel(value, kd, mode).to(dtype=own[key].dtype)
            inflated.append(key)
        else:
            out[key] = value
            mismatched.append((key, shape, target))
    mismatched.sort()
    return out, mismatched, inflated


def _metadata(state: Mapping[str, Any]) -> dict[str, Any] | None:
    """The decoded classifier metadata of a state dict, or ``None``."""
    if "_extra_state" not in state:
        return None
    try:
        return decode_metadata(state["_extra_state"])
    except (TypeError, ValueError):
        return None


def _check_source(meta: dict[str, Any] | None, model: nn.Module, source: str) -> None:
    """Refuse checkpoints of another architecture; note 3D ones (loaded as they are)."""
    if meta is None:
        return
    arch = getattr(model, "arch", None)
    if arch is not None and meta.get("arch") not in (None, arch):
        raise ValueError(f"{source} holds a {meta['arch']} checkpoint; it cannot be inflated into a {arch}")
    if meta.get("spatial_dims") == 3:
        saved, conv = meta.get("conv", "standard"), getattr(model, "conv", "standard")
        if saved != conv:
            raise ValueError(
                f"{source} is a 3D checkpoint with conv={saved!r}, not a 2D one: build the model with "
                f"conv={saved!r} and load it without inflate (this model has conv={conv!r})"
            )
        logger.warning("%s is already a 3D checkpoint: tensors of matching shape are loaded as they are", source)
    stem = getattr(model, "stem", None)
    if stem is not None and meta.get("stem") not in (None, stem):
        # e.g. 2D "small" (no pooling) vs 3D "medium" (max-pool): same weights, another down-sampling
        logger.warning(
            "%s was trained with stem=%r, the 3D model has stem=%r: the weights fit but the down-sampling differs "
            "(pass stem=%r to build_classifier to keep it)",
            source,
            meta["stem"],
            stem,
            meta["stem"],
        )


def prepare_inflated(
    state: dict[str, Any], model: nn.Module, own: Mapping[str, Any], mode: str, source: str
) -> tuple[dict[str, Any], list[tuple[str, tuple[int, ...], tuple[int, ...]]], list[str]]:
    """Inflate ``state`` (already with model-level keys) for ``model``; metadata rewritten as the 3D model's."""
    if isinstance(model, Classifier):
        if model.spatial_dims != 3:
            raise ValueError(
                f"inflating {source} needs a 3D model, got a {model.arch} with spatial_dims={model.spatial_dims}"
            )
        if model.arch.startswith("vit"):
            raise ValueError(
                "2D->3D inflation supports densenet*/resnet* (a ViT's position embeddings depend on the patch grid)"
            )
    meta = _metadata(state)
    _check_source(meta, model, source)
    out, mismatched, inflated = _inflate_state(state, own, mode)
    if isinstance(model, Classifier) and meta is not None:
        names = meta.get("label_names")
        if names is None or len(names) == model.num_classes:
            # the 3D model's description with the checkpoint's label names (no "saved from a 2D model" warning)
            new_meta = model.describe()
            if names is not None:
                new_meta["label_names"] = list(names)
            out["_extra_state"] = encode_metadata(new_meta)
    logger.info("inflated %d 2D kernels of %s to 3D (mode=%s)", len(inflated), source, mode)
    return out, mismatched, inflated


def _as_model_keys(state: dict[str, Any], model: nn.Module) -> tuple[dict[str, Any], str]:
    """Prefix a plain MONAI backbone state with ``backbone.`` (as :func:`load_weights` does)."""
    has_backbone = hasattr(model, "backbone") and isinstance(model.backbone, nn.Module)
    if has_backbone and not any(k.startswith("backbone.") or k in MODEL_LEVEL_KEYS for k in state):
        return {f"backbone.{k}": v for k, v in state.items()}, "backbone"
    return state, "model"


def inflate_2d_to_3d(
    state_dict_2d: Mapping[str, Any] | str | os.PathLike,
    model_3d: nn.Module | None = None,
    mode: str = "i3d",
    depth: int | None = None,
    *,
    strict: bool = True,
) -> dict[str, Any]:
    """A 2D checkpoint as a state dict for a 3D model of the same architecture.

    Conv kernels ``(O, I, kH, kW)`` become ``(O, I, kH, kW, kD)`` (depth last, as medclass volumes
    ``(B, C, H, W, D)``), ``kD`` being the 3D model's kernel depth:

    * ``"i3d"``: repeated along depth and divided by ``kD``: a depth-constant volume gives the 2D activations
      (exactly away from the depth borders, where zero padding sees fewer slices);
    * ``"center"``: the 2D kernel in depth slice ``kD // 2``, zeros elsewhere (each slice filtered as in 2D);
    * ``"acs"``: for a model built with ``conv="acs"``: its ACS kernels are 2D-shaped and take the 2D kernels 1:1
      (only 1x1 convolutions are reshaped to 1x1x1).

    Norm layers, the linear head, ``thresholds`` and the label names are copied as they are (the metadata becomes
    the 3D model's with the checkpoint's label names). A plain MONAI backbone state (no ``backbone.`` keys) is
    mapped onto ``model_3d.backbone``, as :func:`~medclass.networks.load_weights` does.

    Args:
        state_dict_2d: a 2D :class:`~medclass.networks.Classifier` checkpoint (same arch, width and stem family,
            built with ``spatial_dims=2``): a file (read with ``weights_only=True`` by
            :func:`~medclass.networks.read_state_dict`) or a loaded state dict.
        model_3d: the 3D model whose shapes the kernels are inflated to (e.g. ``build_classifier(arch,
            spatial_dims=3, ...)``). ``None`` inflates every 4-D tensor to depth ``depth`` without checks.
        mode: ``"i3d"``, ``"center"`` or ``"acs"``.
        depth: kernel depth when ``model_3d`` is ``None`` (1x1 kernels get depth 1); must be ``None`` with a model
            (the depths are the model's).
        strict: raise on keys the model lacks or misses; with ``False`` those and the mis-shaped keys are left out
            (logged) and the result loads with ``model_3d.load_state_dict(..., strict=False)``.

    Returns:
        A state dict for ``model_3d.load_state_dict`` (tensors that needed no inflation are shared, not copied).

    Raises:
        FileNotFoundError: the checkpoint file does not exist.
        ValueError: unknown mode; a 2D or ViT target model; a checkpoint of another arch; a shape that is not a pure
            inflation (e.g. another width or stem kernel: the message names each key with both shapes); with
            ``strict``, missing/unexpected keys; ``mode="acs"`` for a model without ACS convolutions.
    """
    check_inflate_mode(mode)
    source, state = state_and_source(state_dict_2d)

    if model_3d is None:
        if mode != "acs" and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
            raise ValueError(f"inflate_2d_to_3d without model_3d needs depth (a positive int), got {depth!r}")
        out, _, inflated = _inflate_state(state, None, mode, depth if depth is not None else 1)
        logger.info("inflated %d 2D kernels of %s to depth %s (mode=%s)", len(inflated), source, depth, mode)
        return out
    if depth is not None:
        raise ValueError(f"depth={depth!r} is taken from model_3d's kernels: pass depth only without model_3d")

    own = model_3d.state_dict()
    state, target = _as_model_keys(state, model_3d)
    out, mismatched, _ = prepare_inflated(state, model_3d, own, mode, source)

    def optional(k: str) -> bool:
        return k.endswith(("num_batches_tracked", "_extra_state"))

    expected = dict(own)
    if target == "backbone":
        for k in MODEL_LEVEL_KEYS:
            expected.pop(k, None)
    missing = sorted(k for k in expected if k not in out and not optional(k))
    unexpected = sorted(k for k in out if k not in own)
    parts = []
    if mismatched:
        mm = [f"{k}: checkpoint {list(a)} vs model {list(b)}" for k, a, b in mismatched]
        parts.append(f"{len(mm)} keys that are not a 2D->3D inflation {_fmt(mm, len(mm))}")
    if missing:
        parts.append(f"{len(missing)} missing keys {_fmt(missing, len(missing))}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys {_fmt(unexpected, len(unexpected))}")
    if parts:
        msg = f"cannot inflate {source} into {type(model_3d).__name__} ({target}, mode={mode!r}): " + "; ".join(parts)
        if strict:
            raise ValueError(msg + " (same arch, width, stem and block settings as the 2D model are needed)")
        logger.warning("%s; leaving those keys out (strict=False)", msg)
    for k, _, _ in mismatched:
        out.pop(k, None)
    for k in unexpected:
        out.pop(k, None)
    return out

"""Loading checkpoints into a :class:`~medclass.networks.Classifier` with readable errors."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
import torch.nn as nn

from medclass.networks.checkpoint import MODEL_LEVEL_KEYS, read_state_dict, state_and_source
from medclass.networks.checkpoint import fmt_keys as _fmt
from medclass.networks.inflate import prepare_inflated, check_inflate_mode

logger = logging.getLogger(__name__)

__all__ = ["LoadReport", "load_weights", "read_state_dict"]

class LoadReport(NamedTuple):
    """What :func:`load_weights` did.

    Attributes:
        target: ``"model"`` (a whole classifier checkpoint) or ``"backbone"`` (a plain MONAI network state).
        loaded_keys: keys loaded (model-level names).
        missing_keys: model keys the checkpoint lacks (left as initialised; only non-empty when ``strict=False``).
        unexpected_keys: checkpoint keys the model lacks (ignored; only when ``strict=False``).
        mismatched_keys: ``(key, checkpoint shape, model shape)`` left as initialised (only when ``strict=False``).
        skipped_keys: keys dropped on purpose (``skip_head``).
    """

    target: str
    loaded_keys: list[str]
    missing_keys: list[str]
    unexpected_keys: list[str]
    mismatched_keys: list[tuple[str, tuple[int, ...], tuple[int, ...]]]
    skipped_keys: list[str]


def _labels_fit(model: nn.Module, extra_state: Any) -> bool:
    """Whether checkpoint metadata (label names) fits the model's number of classes."""
    num_classes = getattr(model, "num_classes", None)
    decode = getattr(model, "decode_extra_state", None)
    if num_classes is None or decode is None:
        return True
    try:
        names = decode(extra_state).get("label_names")
    except (TypeError, ValueError):
        return False
    return names is None or len(names) == num_classes


def _saved_meta(model: nn.Module, extra_state: Any) -> dict[str, Any]:
    """The classifier metadata saved in a checkpoint (empty where absent or unreadable)."""
    decode = getattr(model, "decode_extra_state", None)
    if decode is None or extra_state is None:
        return {}
    try:
        return decode(extra_state)
    except (TypeError, ValueError):
        return {}


def _conv_hint(model: nn.Module, extra_state: Any) -> str:
    """A hint where the checkpoint metadata names another ``conv`` (e.g. an ACS checkpoint for a standard model)."""
    conv = getattr(model, "conv", None)
    saved = _saved_meta(model, extra_state).get("conv")
    if conv is None or saved is None or saved == conv:
        return ""
    return f" (the checkpoint was saved from a model with conv={saved!r}, this one has conv={conv!r})"


def _first_2d_kernel(state: Mapping[str, Any], own: Mapping[str, Any]) -> tuple[str, list[int], list[int]] | None:
    """A 4-D checkpoint tensor whose model counterpart is a 5-D kernel with the same leading shape (2D -> 3D)."""
    for k, v in state.items():
        t = own.get(k)
        if (
            isinstance(v, torch.Tensor)
            and isinstance(t, torch.Tensor)
            and (v.dim(), t.dim()) == (4, 5)
            and tuple(t.shape[:4]) == tuple(v.shape)
        ):
            return k, list(v.shape), list(t.shape)
    return None


def load_weights(
    model: nn.Module,
    path: str | os.PathLike | Mapping[str, Any],
    *,
    skip_head: bool = False,
    strict: bool = True,
    inflate: str | None = None,
) -> LoadReport:
    """Load a checkpoint into a classifier (or a plain MONAI network state into its ``backbone``).

    The checkpoint is read with :func:`read_state_dict` (``weights_only=True``; nested ``"model"`` /
    ``"state_dict"`` / ``"network"`` and DDP ``"module."`` prefixes handled). Checkpoints without any
    ``"backbone."`` key (and no ``thresholds``) are taken as a plain MONAI DenseNet/ResNet/ViT ``state_dict`` and
    loaded into ``model.backbone``.

    Keys and shapes are compared before anything is loaded. BatchNorm ``num_batches_tracked`` and the metadata
    entry ``_extra_state`` may be absent.

    Args:
        model: a :class:`~medclass.networks.Classifier` (or any ``nn.Module``; ``skip_head`` then needs a
            ``head_name`` attribute).
        path: checkpoint file (or an already loaded state dict).
        skip_head: do not load the classification head, the ``thresholds`` and the label names: the model keeps its
            freshly initialised head, so a model pretrained on other labels can start a new task.
        strict: raise on any missing, unexpected or mis-shaped key; with ``False`` load what matches and log the rest.
        inflate: start a 3D model from a 2D checkpoint of the same arch/width/stem: ``"i3d"``, ``"center"`` or
            ``"acs"`` (see :func:`~medclass.networks.inflate_2d_to_3d`). Without it, a 2D checkpoint for a model
            with full 3D kernels is refused with a hint.

    Returns:
        A :class:`LoadReport`.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not a checkpoint, or (strict) keys/shapes do not match (a 2D checkpoint without ``inflate``
            included); the message names the file and lists up to 10 missing, unexpected and mis-shaped keys each.
    """
    source, state = state_and_source(path)
    own = model.state_dict()
    target = "model"
    has_backbone = hasattr(model, "backbone") and isinstance(model.backbone, nn.Module)
    if has_backbone and not any(k.startswith("backbone.") or k in MODEL_LEVEL_KEYS for k in state):
        target = "backbone"
        state = {f"backbone.{k}": v for k, v in state.items()}
    hint = ""
    if inflate is not None and inflate != "":
        check_inflate_mode(inflate)
        state, _, _ = prepare_inflated(state, model, own, inflate, source)
        hint = f" (2D checkpoint inflated with mode={inflate!r})"
    else:
        found = _first_2d_kernel(state, own)
        if found is not None and _saved_meta(model, state.get("_extra_state")).get("spatial_dims") != 3:
            if getattr(model, "conv", None) == "acs":
                todo = "ACS model from it pass inflate='acs'"
            else:
                todo = "3D model from it pass inflate='i3d' (or 'center')"
            key, shape2d, shape3d = found
            hint = f"; it is a 2D checkpoint ({key}: checkpoint {shape2d} vs model {shape3d}): to start this {todo}"
            if strict:
                raise ValueError(f"checkpoint {source} does not fit {type(model).__name__}{hint}")

    skipped: list[str] = []
    expected = dict(own)
    if target == "backbone":
        for k in MODEL_LEVEL_KEYS:
            expected.pop(k, None)
    if skip_head:
        head_name = getattr(model, "head_name", None)
        if not isinstance(head_name, str):
            raise TypeError(f"skip_head needs a model with a head_name attribute, got {type(model).__name__}")
        drop = [k for k in set(state) | set(expected) if k.startswith(head_name + ".") or k in MODEL_LEVEL_KEYS]
        skipped = sorted(k for k in drop if k in state)
        for k in drop:
            state.pop(k, None)
            expected.pop(k, None)

    def optional(k: str) -> bool:
        # temperature: checkpoints from before temperature scaling existed (loaded as 1, no scaling)
        return k.endswith("num_batches_tracked") or k.endswith("_extra_state") or k == "temperature"

    missing = sorted(k for k in expected if k not in state and not optional(k))
    unexpected = sorted(k for k in state if k not in expected)
    mismatched = [
        (k, tuple(v.shape), tuple(expected[k].shape))
        for k, v in state.items()
        if k in expected and not k.endswith("_extra_state")
        and isinstance(v, torch.Tensor) and isinstance(expected[k], torch.Tensor)
        and tuple(v.shape) != tuple(expected[k].shape)
    ]
    mismatched.sort()
    bad = {k for k, _, _ in mismatched} | set(unexpected)
    to_load = {k: v for k, v in state.items() if k not in bad}
    if "_extra_state" in to_load and not _labels_fit(model, to_load["_extra_state"]):
        # the label names belong to a head of another size (only reachable with strict=False or a bare dict)
        to_load.pop("_extra_state")
        unexpected = sorted([*unexpected, "_extra_state"])
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys {_fmt(missing, len(missing))}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys {_fmt(unexpected, len(unexpected))}")
        if mismatched:
            mm = [f"{k}: checkpoint {list(a)} vs model {list(b)}" for k, a, b in mismatched]
            parts.append(f"{len(mismatched)} mis-shaped keys {_fmt(mm, len(mm))}")
        msg = f"checkpoint {source} does not match {type(model).__name__} ({target}){hint}: " + "; ".join(parts)
        msg += _conv_hint(model, state.get("_extra_state"))
        if strict:
            tip = "" if skip_head else " (skip_head=True drops the head to start a new label set)"
            raise ValueError(msg + tip)
        logger.warning("%s; loading the %d matching keys only (strict=False)", msg, len(to_load))

    try:
        model.load_state_dict(to_load, strict=False)
    except (RuntimeError, ValueError, TypeError) as e:
        raise ValueError(f"checkpoint {source} could not be loaded into {type(model).__name__}: {e}") from e
    loaded = sorted(to_load)
    logger.info(
        "loaded %d tensors from %s into the %s%s%s",
        len(loaded),
        source,
        target,
        " (head skipped)" if skip_head else "",
        f" (inflated, mode={inflate})" if inflate else "",
    )
    return LoadReport(target, loaded, missing, unexpected, mismatched, skipped)

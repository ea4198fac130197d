"""Fine-tuning controls: freeze the backbone or its first stages, a lower learning rate for the backbone, unfreeze
after some epochs.

``freeze``: ``"none"`` (train everything), ``"backbone"`` (only the classification head learns: a linear probe) or
``"stages:N"`` (the first ``N`` stages of :func:`stages` are frozen: partial fine-tuning). Frozen parameters get
``requires_grad=False``; frozen normalisation layers keep their running statistics: the
:class:`~medclass.networks.Classifier` keeps them in eval mode whatever ``train()`` is called with.

:func:`param_groups` gives the optimizer a head group at ``lr`` and a backbone group at ``lr * backbone_lr_scale``
(frozen parameters included, so that unfreezing needs no new optimizer); :class:`Unfreeze` unfreezes everything once
``epoch`` epochs are done (an ignite handler with ``attach(engine)``).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import torch.nn as nn
from torch.nn.modules.batchnorm import _NormBase

from medclass.vocab import unwrap_model

logger = logging.getLogger(__name__)

__all__ = ["Unfreeze", "freeze", "param_groups", "parse_freeze", "stages", "unfreeze"]


def stages(model: nn.Module) -> list[tuple[str, list[str]]]:
    """The backbone's stages in forward order: ``(stage name, parameter-name prefixes)``.

    ResNet: ``stem`` (``conv1``, ``bn1``), ``layer1`` .. ``layer4``. DenseNet: ``stem`` (``conv0``, ``norm0``), then
    each dense block with the transition after it (the last with ``norm5``). ViT: ``stem`` (patch embedding,
    position embeddings, class token), then each transformer block (the last with the final norm). The
    classification head is never part of a stage.
    """
    arch = str(getattr(model, "arch", ""))
    names = [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_buffers()]
    if arch.startswith("resnet"):
        out = [("stem", ["backbone.conv1.", "backbone.bn1."])]
        return out + [(f"layer{i}", [f"backbone.layer{i}."]) for i in range(1, 5)]
    if arch.startswith("densenet"):
        pattern = r"backbone\.features\.denseblock(\d+)\."
        blocks = sorted({int(m.group(1)) for n in names if (m := re.match(pattern, n))})
        out = [("stem", ["backbone.features.conv0.", "backbone.features.norm0."])]
        for b in blocks:
            prefixes = [f"backbone.features.denseblock{b}.", f"backbone.features.transition{b}."]
            if b == blocks[-1]:
                prefixes.append("backbone.features.norm5.")
            out.append((f"denseblock{b}", prefixes))
        return out
    if arch.startswith("vit"):
        blocks = sorted({int(m.group(1)) for n in names if (m := re.match(r"backbone\.blocks\.(\d+)\.", n))})
        out = [("stem", ["backbone.patch_embedding.", "backbone.cls_token"])]
        for b in blocks:
            out.append((f"block{b}", [f"backbone.blocks.{b}."] + (["backbone.norm."] if b == blocks[-1] else [])))
        return out
    raise TypeError(f"stages() needs a medclass Classifier (densenet*/resnet*/vit*), got {type(model).__name__}")


def parse_freeze(spec: Any, num_stages: int | None = None) -> str | int:
    """``"none"``, ``"backbone"`` or the number of stages of ``"stages:N"`` (``None`` counts as ``"none"``).

    Raises:
        ValueError: anything else, or ``N`` outside ``1 .. num_stages``.
    """
    if spec is None or spec is False or spec in ("none", ""):
        return "none"
    if spec == "backbone":
        return "backbone"
    m = re.fullmatch(r"stages:(\d+)", str(spec).strip()) if isinstance(spec, str) else None
    if m is None:
        raise ValueError(f"freeze must be 'none', 'backbone' or 'stages:N', got {spec!r}")
    n = int(m.group(1))
    if n < 1 or (num_stages is not None and n > num_stages):
        limit = f"1..{num_stages}" if num_stages is not None else ">= 1"
        raise ValueError(f"freeze={spec!r}: N must be in {limit} (this backbone has {num_stages} stages)")
    return n


def _head_prefix(model: nn.Module) -> str:
    head = getattr(model, "head_name", None)
    if not isinstance(head, str):
        raise TypeError(f"freezing needs a medclass Classifier (with head_name), got {type(model).__name__}")
    return head + "."


def freeze(model: nn.Module, spec: Any = "none") -> list[str]:
    """Freeze the backbone (``"backbone"``) or its first ``N`` stages (``"stages:N"``); ``"none"`` unfreezes.

    Args:
        model: a :class:`~medclass.networks.Classifier`.
        spec: ``"none"``, ``"backbone"`` or ``"stages:N"``.

    Returns:
        The names of the frozen parameters.
    """
    st = stages(model)
    what = parse_freeze(spec, len(st))
    unfreeze(model)
    if what == "none":
        return []
    head = _head_prefix(model)
    if what == "backbone":
        def frozen(name: str) -> bool:
            return not name.startswith(head)
    else:
        prefixes = tuple(p for _, ps in st[: int(what)] for p in ps)

        def frozen(name: str) -> bool:
            return name.startswith(prefixes)
    names = []
    for name, p in model.named_parameters():
        if frozen(name):
            p.requires_grad_(False)
            names.append(name)
    model.frozen_norms = [n for n, m in model.named_modules()
                          if isinstance(m, _NormBase) and m.track_running_stats and frozen(n + ".")]
    model.train(model.training)
    logger.info("froze %d parameter tensors (freeze=%s), %d normalisation layers keep their statistics",
                len(names), spec, len(model.frozen_norms))
    return names


def unfreeze(model: nn.Module) -> None:
    """Every parameter trainable again; normalisation layers follow ``train()`` again."""
    for p in model.parameters():
        p.requires_grad_(True)
    if hasattr(model, "frozen_norms"):
        model.frozen_norms = []
        model.train(model.training)


def param_groups(model: nn.Module, lr: float, backbone_lr_scale: float = 1.0) -> Any:
    """Optimizer parameters: the head at ``lr``, the backbone at ``lr * backbone_lr_scale``.

    With ``backbone_lr_scale == 1`` this is ``model.parameters()`` (one group, as before). Frozen parameters are in
    the backbone group (the optimizer skips them while they have no gradient; :class:`Unfreeze` needs them there).

    Raises:
        ValueError: a scale that is not a finite positive number (above 1 is allowed, and logged).
    """
    model = unwrap_model(model)  # DistributedDataParallel: the classifier it wraps
    scale = float(backbone_lr_scale)
    if not scale > 0 or scale != scale or scale == float("inf"):
        raise ValueError(f"backbone_lr_scale must be a positive number, got {backbone_lr_scale!r}")
    if scale == 1.0:
        return model.parameters()
    head = _head_prefix(model)
    heads, rest = [], []
    for name, p in model.named_parameters():
        (heads if name.startswith(head) else rest).append(p)
    if scale > 1:
        logger.warning("backbone_lr_scale=%s: the backbone learns faster than the head", scale)
    return [{"params": heads, "lr": float(lr), "name": "head"},
            {"params": rest, "lr": float(lr) * scale, "name": "backbone"}]


class Unfreeze:
    """Unfreeze the whole network once ``epoch`` epochs are done (at the start of epoch ``epoch + 1``).

    Also right on resuming a run past that epoch. ``epoch=None`` does nothing.

    Args:
        network: the classifier (or a ``DataParallel`` wrapper of it).
        epoch: number of epochs trained with the ``freeze`` setting.
    """

    def __init__(self, network: nn.Module, epoch: int | None = None) -> None:
        if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0):
            raise ValueError(f"unfreeze_epoch must be a non-negative int or null, got {epoch!r}")
        if type(network).__name__ == "DistributedDataParallel" and epoch is not None:
            raise ValueError("unfreeze_epoch is not supported with DistributedDataParallel (its gradient buckets "
                             "are fixed when it wraps the model): freeze for the whole run or not at all")
        self.network = getattr(network, "module", network)
        self.epoch = epoch

    def __call__(self, engine: Any) -> None:
        if self.epoch is None or engine.state.epoch <= self.epoch:
            return
        if any(not p.requires_grad for p in self.network.parameters()):
            unfreeze(self.network)
            logger.info("epoch %d: unfroze the network after %d epochs", engine.state.epoch, self.epoch)

    def attach(self, engine: Any) -> None:
        """Run at the start of every epoch."""
        from ignite.engine import Events  # noqa: PLC0415 - ignite is only needed by workflows

        engine.add_event_handler(Events.EPOCH_STARTED, self)

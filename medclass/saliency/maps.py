"""The entry point: :func:`saliency_maps` of a batch, and :class:`SaliencyMethod`, a method with its settings as
one checked object (what :class:`medclass.handlers.SaliencyHandler` and the label server are configured with)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from medclass.saliency.geometry import UPSAMPLING, upsample
from medclass.saliency.methods import cam, input_gradients, occlusion, rollout
from medclass.saliency.targets import model_state, normalize_maps, plain, resolve_target_layer, resolve_targets

logger = logging.getLogger(__name__)

__all__ = ["METHODS", "METHOD_OPTIONS", "SaliencyMethod", "canonical_method", "check_options", "saliency_maps"]

METHODS = ("gradcam", "gradcam++", "occlusion", "vanilla", "smoothgrad", "rollout")
"""Saliency methods understood by :func:`saliency_maps` (``rollout`` is ViT only; the CAMs work on ViT tokens)."""

#: The options (``**method_kwargs`` of :func:`saliency_maps`) each method takes.
METHOD_OPTIONS: dict[str, frozenset[str]] = {
    "gradcam": frozenset({"upsample"}),
    "gradcam++": frozenset({"upsample"}),
    "occlusion": frozenset({"window", "stride", "baseline", "chunk"}),
    "vanilla": frozenset(),
    "smoothgrad": frozenset({"n_samples", "noise", "seed"}),
    "rollout": frozenset({"discard_ratio", "head_fusion"}),
}
_ALIASES = {"gradcampp": "gradcam++", "gradcamplusplus": "gradcam++", "gradcam": "gradcam"}


def canonical_method(method: str) -> str:
    """A method name as :data:`METHODS` spells it (any case; ``grad-cam++``, ``gradcam_pp`` ... accepted).

    Raises:
        ValueError: an unknown method.
    """
    name = str(method).lower().replace("_", "").replace("-", "")
    name = _ALIASES.get(name, name)
    if name not in METHODS:
        raise ValueError(f"unknown saliency method {name!r}; choose one of {list(METHODS)}")
    return name


def check_options(method: str, options: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` for an option ``method`` does not take, or an unknown ``upsample``."""
    allowed = METHOD_OPTIONS[method]
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for method {method!r}; allowed: {sorted(allowed)}")
    mode = str(options.get("upsample", "receptive-field"))
    if mode not in UPSAMPLING:
        raise ValueError(f"upsample must be one of {list(UPSAMPLING)}, got {mode!r}")


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
            ``vanilla`` and ``smoothgrad`` work with any module returning logits ``(B, num_classes)``. For an
            :class:`~medclass.networks.Ensemble`, the mean of its members' maps, for targets chosen on the
            ensemble's output.
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
    method = canonical_method(method)
    spatial_dims = int(getattr(model, "spatial_dims", images.dim() - 2))
    if images.dim() != spatial_dims + 2:
        raise ValueError(
            f"images must be (B, C, *spatial) with {spatial_dims} spatial dims, got shape {tuple(images.shape)}"
        )
    check_options(method, method_kwargs)
    if target_layer is not None and method not in ("gradcam", "gradcam++"):
        logger.debug("target_layer is ignored by method %s", method)
    members = getattr(model, "members", None)
    if isinstance(members, nn.ModuleList):  # an ensemble: the mean of its members' maps for the ensemble's targets
        with model_state(model), torch.no_grad():
            param = next(model.parameters())
            idx = resolve_targets(model, targets, model(plain(images).detach().float().to(param.device)))
        return torch.stack([saliency_maps(m, images, idx, method, target_layer, **method_kwargs)
                            for m in members]).mean(0)
    upsample_mode = str(method_kwargs.get("upsample", "receptive-field"))
    size = tuple(images.shape[2:])
    param = next(model.parameters(), None)
    x = plain(images).detach().to(dtype=torch.float32)
    if param is not None:
        x = x.to(param.device)
    x = x.clone()
    geometry = None
    with model_state(model):
        if method in ("gradcam", "gradcam++"):
            layer = resolve_target_layer(model, target_layer)
            x.requires_grad_(True)
            raw, _, _, geometry = cam(model, x, targets, layer, method, spatial_dims)
            if upsample_mode == "uniform":
                geometry = None
        elif method == "vanilla":
            raw, _, _ = input_gradients(model, x, targets, 1, 0.0, None)
        elif method == "smoothgrad":
            raw, _, _ = input_gradients(
                model,
                x,
                targets,
                int(method_kwargs.get("n_samples", 16)),
                float(method_kwargs.get("noise", 0.15)),
                method_kwargs.get("seed", 0),
            )
        elif method == "occlusion":
            raw, _, _ = occlusion(
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
            raw, _, _ = rollout(model, x, targets, float(method_kwargs.get("discard_ratio", 0.0)), fusion)
        maps = normalize_maps(upsample(raw.detach().float(), size, geometry))
    return maps.cpu().contiguous()


@dataclass(frozen=True)
class SaliencyMethod:
    """A saliency method with its settings, checked on construction.

    Args:
        name: one of :data:`METHODS` (aliases such as ``gradcampp`` accepted; stored as spelled there).
        target_layer: Grad-CAM layer (``None``: the model's own); see :func:`saliency_maps`.
        options: the method's options (:data:`METHOD_OPTIONS`, e.g. ``{"window": 16}`` for occlusion).

    Raises:
        ValueError: an unknown method or option, or an unknown ``upsample``.
    """

    name: str = "gradcam"
    target_layer: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        name = canonical_method(self.name)
        options = dict(self.options or {})
        check_options(name, options)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "options", options)
        if self.target_layer in ("", None):
            object.__setattr__(self, "target_layer", None)

    @classmethod
    def of(cls, method: str | SaliencyMethod | Mapping[str, Any]) -> SaliencyMethod:
        """``method`` itself, a method by name, or one from a mapping of the fields."""
        if isinstance(method, SaliencyMethod):
            return method
        if isinstance(method, Mapping):
            return cls(**method)
        return cls(str(method))

    def maps(self, model: nn.Module, images: torch.Tensor, targets: Any = None) -> torch.Tensor:
        """:func:`saliency_maps` of ``images`` with this method's settings."""
        return saliency_maps(model, images, targets=targets, method=self.name, target_layer=self.target_layer,
                             **self.options)

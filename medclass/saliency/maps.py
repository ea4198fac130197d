"""The entry point: :func:`saliency_maps` of a batch, and :class:`SaliencyMethod`, a method with its settings as
one checked object (what :class:`medclass.handlers.SaliencyHandler` and the label server are configured with)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from medclass.saliency.geometry import UPSAMPLING, upsample
from medclass.saliency.methods import CamRecord, cam_forward, cam_maps, input_gradients, occlusion, rollout
from medclass.saliency.targets import model_state, normalize_maps, plain, resolve_target_layer, resolve_targets

logger = logging.getLogger(__name__)

__all__ = [
    "METHODS", "METHOD_OPTIONS", "SaliencyMethod", "canonical_method", "check_options", "explain", "record_maps",
    "saliency_maps",
]

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


def upsample_option(options: Mapping[str, Any]) -> str:
    """The CAM ``upsample`` option of a method's options (default ``receptive-field``, :data:`UPSAMPLING`'s first)."""
    return str(options.get("upsample", UPSAMPLING[0]))


def check_options(method: str, options: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` for an option ``method`` does not take, or an unknown ``upsample``."""
    allowed = METHOD_OPTIONS[method]
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for method {method!r}; allowed: {sorted(allowed)}")
    mode = upsample_option(options)
    if mode not in UPSAMPLING:
        raise ValueError(f"upsample must be one of {list(UPSAMPLING)}, got {mode!r}")


def saliency_maps(
    model: nn.Module,
    images: torch.Tensor,
    targets: Any = None,
    method: str = "gradcam",
    target_layer: str | nn.Module | None = None,
    precision: str = "fp32",
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
        precision: ``fp32`` (default), ``bf16`` or ``fp16``: the autocast the model runs under while the maps are
            computed; pass the precision the model predicts at (a bundle's ``precision``) to explain that prediction.
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
            label, an image tensor of the wrong rank, ``rollout`` on a CNN, an unknown precision.
        TypeError: ``images`` is not a tensor.
    """
    return _compute(model, images, targets, method, target_layer, precision, method_kwargs, want_logits=False)[1]


def explain(
    model: nn.Module,
    images: torch.Tensor,
    targets: Any = None,
    method: str = "gradcam",
    target_layer: str | nn.Module | None = None,
    precision: str = "fp32",
    **method_kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's logits and the saliency maps of a batch, from one forward pass where the method allows.

    For ``gradcam`` and ``gradcam++`` the pass that computes the maps is the prediction itself (the layers before
    the Grad-CAM layer run as in inference, without recording gradients), so probabilities and maps cost about one
    inference pass: what a viewer asking for both needs. Other methods add a plain forward pass for the logits.
    Arguments as for :func:`saliency_maps`; ``targets=None`` explains each image's top-scoring label of these logits.

    Returns:
        ``(logits, maps)``: the logits ``(B, num_classes)`` in float32 on the model's device, detached, computed at
        ``precision``; the maps as :func:`saliency_maps` returns them.
    """
    return _compute(model, images, targets, method, target_layer, precision, method_kwargs, want_logits=True)


def _compute(model, images, targets, method, target_layer, precision, method_kwargs, want_logits: bool):
    """``(logits or None, maps)``: :func:`saliency_maps` and :func:`explain`."""
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
        with model_state(model, precision), torch.no_grad():
            param = next(model.parameters())
            logits = model(plain(images).detach().float().to(param.device)).detach().float()
            idx = resolve_targets(model, targets, logits)
        maps = torch.stack([saliency_maps(m, images, idx, method, target_layer, precision, **method_kwargs)
                            for m in members]).mean(0)
        return (logits if want_logits else None), maps
    upsample_mode = upsample_option(method_kwargs)
    size = tuple(images.shape[2:])
    param = next(model.parameters(), None)
    x = plain(images).detach().to(dtype=torch.float32)
    if param is not None:
        x = x.to(param.device)
    x = x.clone()
    logits = None
    with model_state(model, precision):
        if method in ("gradcam", "gradcam++"):
            record = cam_forward(model, x, resolve_target_layer(model, target_layer))
            logits = record.logits
            maps = record_maps(model, record, targets, size, method, upsample_mode)
        else:
            if want_logits:  # the methods below score their own perturbed passes: the prediction is one more
                with torch.no_grad():
                    logits = model(x)
                targets = resolve_targets(model, targets, logits)
            raw = _other_method(model, x, targets, method, method_kwargs)
            maps = normalize_maps(upsample(raw.detach().float(), size, None))
    if want_logits:
        logits = logits.detach().float()
    return logits, maps.cpu().contiguous()


def record_maps(model: nn.Module, record: CamRecord, targets: Any, size: Sequence[int], method: str = "gradcam",
                upsample_mode: str = UPSAMPLING[0]) -> torch.Tensor:
    """The maps ``(B, T, *size)`` in ``[0, 1]`` of a CAM method from a :func:`~medclass.saliency.methods.cam_forward`
    pass of ``model`` (a pass someone else ran: the inference workflow's own, see
    :class:`medclass.handlers.SaliencyHandler`).

    Args:
        targets: as for :func:`saliency_maps`, resolved on the record's logits.
        size: the input's spatial shape (the maps are upsampled to it).
        method: ``gradcam`` or ``gradcam++``.
        upsample_mode: see ``upsample`` in :func:`saliency_maps`.
    """
    spatial_dims = len(size)
    idx = resolve_targets(model, targets, record.logits)
    raw, geometry = cam_maps(record, idx, method, model, spatial_dims, size)
    return normalize_maps(upsample(raw.detach().float(), tuple(size), None if upsample_mode == "uniform" else geometry))


def _other_method(model, x, targets, method: str, method_kwargs) -> torch.Tensor:
    """Raw maps of the methods other than the CAMs."""
    if method == "vanilla":
        return input_gradients(model, x, targets, 1, 0.0, None)[0]
    if method == "smoothgrad":
        return input_gradients(model, x, targets, int(method_kwargs.get("n_samples", 16)),
                               float(method_kwargs.get("noise", 0.15)), method_kwargs.get("seed", 0))[0]
    if method == "occlusion":
        return occlusion(model, x, targets, method_kwargs.get("window"), method_kwargs.get("stride"),
                         int(method_kwargs.get("chunk", 64)), str(method_kwargs.get("baseline", "mean")))[0]
    fusion = str(method_kwargs.get("head_fusion", "mean"))
    if fusion not in ("mean", "max"):
        raise ValueError(f"head_fusion must be 'mean' or 'max', got {fusion!r}")
    return rollout(model, x, targets, float(method_kwargs.get("discard_ratio", 0.0)), fusion)[0]


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

    @property
    def one_pass(self) -> bool:
        """Whether the maps come from the prediction's own forward pass (:func:`explain`): the CAMs."""
        return self.name in ("gradcam", "gradcam++")

    def maps(self, model: nn.Module, images: torch.Tensor, targets: Any = None,
             precision: str = "fp32") -> torch.Tensor:
        """:func:`saliency_maps` of ``images`` with this method's settings."""
        return saliency_maps(model, images, targets=targets, method=self.name, target_layer=self.target_layer,
                             precision=precision, **self.options)

    def record_maps(self, model: nn.Module, record: CamRecord, targets: Any, size: Sequence[int]) -> torch.Tensor:
        """:func:`record_maps` of a CAM pass someone else ran, with this method's settings."""
        return record_maps(model, record, targets, size, self.name, upsample_option(self.options))

    def explain(self, model: nn.Module, images: torch.Tensor, targets: Any = None,
                precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`explain` (logits and maps) of ``images`` with this method's settings."""
        return explain(model, images, targets=targets, method=self.name, target_layer=self.target_layer,
                       precision=precision, **self.options)

"""Published weight layouts (torchvision, timm, TorchXRayVision, MedicalNet) recognised from their keys and mapped
onto medclass's MONAI networks, without importing the libraries that wrote them.

:func:`detect_layout` names the layout of a state dict and the architecture it fixes; :func:`map_to_monai` renames
its tensors to MONAI ``DenseNet`` / ``ResNet`` / ``ViT`` names (what :class:`~medclass.networks.Classifier` keeps
under ``backbone``) and says which source keys it ignored and why.

Layouts (keys after ``module.`` / ``_orig_mod.`` prefixes and ``state_dict`` / ``model`` wrappers are removed):

* ``torchvision_resnet``: ``conv1``, ``bn1``, ``layer{1-4}.{i}.conv{1-3}/bn{1-3}``, ``layer{n}.0.downsample.0/1``
  (1x1 conv without bias + BN), ``fc`` (1000 ImageNet classes). timm's ResNet files use the same names.
* ``torchvision_densenet``: ``features.conv0/norm0``, ``features.denseblock{b}.denselayer{l}.norm1/conv1/norm2/conv2``
  (``norm.1``/``conv.1`` in torchvision's original files), ``features.transition{t}.norm/conv``,
  ``features.norm5``, ``classifier``. timm's DenseNet files use the same names.
* ``xrv_densenet``: TorchXRayVision's DenseNet-121: the torchvision names with a 1-channel ``conv0`` and an
  18-row ``classifier`` (its pathologies).
* ``timm_vit``: ``cls_token``, ``pos_embed`` (class position first), ``patch_embed.proj``,
  ``blocks.{i}.norm1/attn.qkv/attn.proj/norm2/mlp.fc1/mlp.fc2``, ``norm``, ``head``.
* ``torchvision_vit``: ``class_token``, ``conv_proj``, ``encoder.pos_embedding``,
  ``encoder.layers.encoder_layer_{i}.ln_1/self_attention.in_proj_*/self_attention.out_proj/ln_2/mlp.{0,3}``
  (``mlp.linear_1/2`` in the published file), ``encoder.ln``, ``heads.head``.
* ``medicalnet_resnet``: MedicalNet's 3D ResNets (``module.`` prefix, under ``state_dict``): the ResNet names
  with 5-D kernels, no ``fc``, ResNet-18/34 with shortcut A (no ``downsample`` tensors), an optional ``conv_seg``
  segmentation head (ignored).
* ``monai``: MONAI/medclass names (``...denselayer{l}.layers.norm1``, ``patch_embedding.patch_embeddings``,
  ResNets with a ``downsample.0.bias``): loaded as they are by :func:`medclass.networks.load_weights`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["LAYOUTS", "SourceLayout", "detect_layout", "map_to_monai"]

LAYOUTS: tuple[str, ...] = (
    "medclass",
    "monai",
    "torchvision_resnet",
    "torchvision_densenet",
    "xrv_densenet",
    "timm_vit",
    "torchvision_vit",
    "medicalnet_resnet",
)
"""Layout names returned by :func:`detect_layout`."""

_RESNET_DEPTHS = {
    ("basic", (1, 1, 1, 1)): "resnet10",
    ("basic", (2, 2, 2, 2)): "resnet18",
    ("basic", (3, 4, 6, 3)): "resnet34",
    ("bottleneck", (3, 4, 6, 3)): "resnet50",
    ("bottleneck", (3, 4, 23, 3)): "resnet101",
    ("bottleneck", (3, 8, 36, 3)): "resnet152",
}
_DENSENETS = {(6, 12, 24, 16): "densenet121", (6, 12, 32, 32): "densenet169", (6, 12, 48, 32): "densenet201"}
_VITS = {(384, 6): "vit_small", (768, 12): "vit_base"}  # (hidden size, heads) -> medclass arch
_DENSE_OLD = re.compile(r"^(.*denselayer\d+)\.(norm|relu|conv)\.([12])\.(.*)$")
_DENSE_NEW = re.compile(r"^(.*denselayer\d+)\.((?:norm|relu|conv)[12]\..*)$")


@dataclass
class SourceLayout:
    """A recognised layout and the architecture its tensors fix.

    Attributes:
        name: one of :data:`LAYOUTS`.
        family: ``"resnet"``, ``"densenet"``, ``"vit"`` or ``""`` (medclass/monai: not inspected).
        arch: the medclass arch these tensors are (``"resnet18"``, ``"densenet121"``, ``"vit_base"``...), or ``""``.
        spatial_dims: 2 or 3 (kernel dimensions).
        in_channels: input channels of the first convolution.
        num_classes: rows of the source's classification head (``0`` without one).
        fixed: architecture arguments of :func:`~medclass.networks.build_classifier` the tensors fix
            (``width``, ``stem``, ``patch_size``, ``image_size``, ...).
        first_conv: MONAI name of the first convolution (where preprocessing and input channels are folded in).
        first_norm: MONAI name of the normalisation after it (``""`` where the convolution has a bias instead).
        head: MONAI name prefix of the classification layer.
        notes: anything worth telling the user (e.g. the shortcut type).
    """

    name: str
    family: str = ""
    arch: str = ""
    spatial_dims: int = 2
    in_channels: int = 0
    num_classes: int = 0
    fixed: dict[str, Any] = field(default_factory=dict)
    first_conv: str = ""
    first_norm: str = ""
    head: str = ""
    notes: list[str] = field(default_factory=list)


def _count(keys: set[str], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in keys if (m := rx.match(k))})


def _resnet_layout(state: Mapping[str, torch.Tensor], keys: set[str]) -> SourceLayout:
    conv1 = state["conv1.weight"]
    kind = "bottleneck" if "layer1.0.conv3.weight" in keys else "basic"
    blocks = tuple(_count(keys, rf"^layer{i}\.(\d+)\.conv1\.weight$") for i in range(1, 5))
    arch = _RESNET_DEPTHS.get((kind, blocks), "")
    width = int(state["layer1.0.conv1.weight"].shape[0])
    dims = conv1.dim() - 2
    has_fc = "fc.weight" in keys
    shortcut_a = not any(".downsample." in k for k in keys)
    if any(k.endswith("downsample.0.bias") for k in keys) or conv1.shape[-1] != 7:
        # MONAI's ResNet default (bias_downsample=True) or one of medclass's 3x3 stems: medclass's own backbone
        name = "monai"
    elif dims == 3 and not has_fc:
        name = "medicalnet_resnet"
    else:
        name = "torchvision_resnet"
    lay = SourceLayout(
        name, "resnet", arch, dims, int(conv1.shape[1]), int(state["fc.weight"].shape[0]) if has_fc else 0,
        first_conv="conv1", first_norm="bn1", head="fc",
    )
    # a 7-wide first kernel is the standard stem (7x7 conv stride 2 + max-pool); medclass's other stems use 3x3
    lay.fixed = {"width": width, "stem": "standard" if conv1.shape[-1] == 7 else "", "layers": list(blocks)}
    if shortcut_a:
        lay.fixed["shortcut_type"] = "A"
        lay.notes.append("shortcut A (parameter-free: strided identity, zero channels)")
    return lay


def _densenet_layout(state: Mapping[str, torch.Tensor], keys: set[str], hint: str) -> SourceLayout:
    blocks = tuple(_count(keys, rf"^features\.denseblock{b}\.denselayer(\d+)\.") for b in range(1, 5))
    conv0 = state["features.conv0.weight"]
    growth_key = next(
        (k for k in ("features.denseblock1.denselayer1.conv2.weight", "features.denseblock1.denselayer1.conv.2.weight")
         if k in keys), None,
    )
    rows = int(state["classifier.weight"].shape[0]) if "classifier.weight" in keys else 0
    xrv = hint == "torchxrayvision" or (hint == "" and int(conv0.shape[1]) == 1 and rows == 18)
    lay = SourceLayout(
        "xrv_densenet" if xrv else "torchvision_densenet", "densenet", _DENSENETS.get(blocks, ""),
        conv0.dim() - 2, int(conv0.shape[1]), rows,
        first_conv="features.conv0", first_norm="features.norm0", head="class_layers.out",
    )
    lay.fixed = {"width": int(conv0.shape[0]), "stem": "standard" if conv0.shape[-1] == 7 else "?",
                 "block_config": list(blocks)}
    if growth_key is not None:
        lay.fixed["growth_rate"] = int(state[growth_key].shape[0])
    return lay


def _vit_layout(state: Mapping[str, torch.Tensor], keys: set[str], name: str) -> SourceLayout:
    if name == "timm_vit":
        proj, pos, prefix = state["patch_embed.proj.weight"], state["pos_embed"], r"^blocks\.(\d+)\."
        qkv = "blocks.0.attn.qkv.weight"
    else:
        proj, pos = state["conv_proj.weight"], state["encoder.pos_embedding"]
        prefix = r"^encoder\.layers\.encoder_layer_(\d+)\."
        qkv = "encoder.layers.encoder_layer_0.self_attention.in_proj_weight"
    hidden, patch = int(proj.shape[0]), tuple(int(s) for s in proj.shape[2:])
    depth = _count(keys, prefix)
    mlp_rx = re.compile(prefix.replace(r"(\d+)", "0") + r"mlp\.(fc1|0|linear_1)\.weight$")
    mlp = next((int(state[k].shape[0]) for k in keys if mlp_rx.match(k)), 0)
    grid = int(round((pos.shape[1] - 1) ** 0.5))
    heads = {384: 6, 768: 12, 192: 3, 1024: 16}.get(hidden, 0)
    lay = SourceLayout(
        name, "vit", _VITS.get((hidden, heads), "") if depth == 12 and mlp == 4 * hidden else "", len(patch),
        int(proj.shape[1]),
        int(state["head.weight" if name == "timm_vit" else "heads.head.weight"].shape[0])
        if ("head.weight" in keys or "heads.head.weight" in keys) else 0,
        first_conv="patch_embedding.patch_embeddings", head="classification_head",
    )
    lay.fixed = {"patch_size": list(patch), "hidden_size": hidden, "mlp_dim": mlp,
                 "num_layers": depth, "num_heads": heads, "grid": [grid, grid],
                 "qkv_bias": qkv.replace("weight", "bias") in keys}
    return lay


def detect_layout(state: Mapping[str, Any], hint: str = "") -> SourceLayout:
    """Recognise the layout of a state dict (already unwrapped, ``module.`` prefixes removed).

    Args:
        state: the tensors.
        hint: the top-level module of a pickled model's class, e.g. ``"torchxrayvision"`` (``""`` if unknown).

    Returns:
        A :class:`SourceLayout`; ``name="medclass"`` for a medclass checkpoint (``backbone.`` keys or its
        metadata) and ``"monai"`` for a plain MONAI network state (both loaded by ``load_weights`` as they are).

    Raises:
        ValueError: the keys match no known layout (the message lists a few).
    """
    keys = set(state)
    if any(k.startswith("backbone.") for k in keys) or "_extra_state" in keys or "thresholds" in keys:
        return SourceLayout("medclass")
    if "conv1.weight" in keys and "layer1.0.conv1.weight" in keys:
        return _resnet_layout(state, keys)
    if "features.conv0.weight" in keys:
        if any(".layers." in k for k in keys if "denselayer" in k):
            return SourceLayout("monai", "densenet")
        return _densenet_layout(state, keys, hint)
    if "patch_embed.proj.weight" in keys and "pos_embed" in keys:
        return _vit_layout(state, keys, "timm_vit")
    if "conv_proj.weight" in keys and "encoder.pos_embedding" in keys:
        return _vit_layout(state, keys, "torchvision_vit")
    if "patch_embedding.patch_embeddings.weight" in keys or "patch_embedding.position_embeddings" in keys:
        return SourceLayout("monai", "vit")
    listed = ", ".join(sorted(keys)[:8])
    raise ValueError(
        f"unrecognised weight layout (keys {listed} ...): expected a medclass/MONAI checkpoint or torchvision / timm "
        "ResNet, DenseNet or ViT, TorchXRayVision DenseNet or MedicalNet ResNet weights"
    )


def _shortcut_a_as_b(out: dict[str, torch.Tensor], own: Mapping[str, torch.Tensor]) -> list[str]:
    """Fill the 1x1 shortcut convs + BNs of a shortcut-B model so that they compute MedicalNet's shortcut A
    (strided identity on the first channels, zeros for the new ones) in eval mode."""
    done = []
    for key, t in own.items():
        if not key.endswith("downsample.0.weight"):
            continue
        base = key[: -len("0.weight")]
        w = torch.zeros_like(t)
        n = min(t.shape[0], t.shape[1])
        for i in range(n):
            w[(i, i) + (0,) * (t.dim() - 2)] = 1.0
        out[key] = w
        if base + "0.bias" in own:
            out[base + "0.bias"] = torch.zeros_like(own[base + "0.bias"])
        eps = 1e-5
        out[base + "1.weight"] = torch.ones_like(own[base + "1.weight"])
        out[base + "1.bias"] = torch.zeros_like(own[base + "1.bias"])
        out[base + "1.running_mean"] = torch.zeros_like(own[base + "1.running_mean"])
        out[base + "1.running_var"] = torch.full_like(own[base + "1.running_var"], 1.0 - eps)
        done.extend([key, base + "1.weight"])
    return done


def _map_vit(state: Mapping[str, torch.Tensor], layout: SourceLayout) -> tuple[dict[str, torch.Tensor], dict]:
    out: dict[str, torch.Tensor] = {}
    ignored: dict[str, str] = {}
    if layout.name == "timm_vit":
        cls, pos = state["cls_token"], state["pos_embed"]
        rename = [("patch_embed.proj.", "patch_embedding.patch_embeddings."), ("norm.", "norm."),
                  ("head.", "classification_head.")]
        block = re.compile(r"^blocks\.(\d+)\.(.*)$")
        inner = {"norm1.": "norm1.", "norm2.": "norm2.", "attn.qkv.": "attn.qkv.", "attn.proj.": "attn.out_proj.",
                 "mlp.fc1.": "mlp.linear1.", "mlp.fc2.": "mlp.linear2."}
        special = {"cls_token", "pos_embed"}
    else:
        cls, pos = state["class_token"], state["encoder.pos_embedding"]
        rename = [("conv_proj.", "patch_embedding.patch_embeddings."), ("encoder.ln.", "norm."),
                  ("heads.head.", "classification_head.")]
        block = re.compile(r"^encoder\.layers\.encoder_layer_(\d+)\.(.*)$")
        inner = {"ln_1.": "norm1.", "ln_2.": "norm2.", "self_attention.in_proj_weight": "attn.qkv.weight",
                 "self_attention.in_proj_bias": "attn.qkv.bias", "self_attention.out_proj.": "attn.out_proj.",
                 "mlp.0.": "mlp.linear1.", "mlp.3.": "mlp.linear2.", "mlp.linear_1.": "mlp.linear1.",
                 "mlp.linear_2.": "mlp.linear2."}
        special = {"class_token", "encoder.pos_embedding"}
    # MONAI adds position embeddings to the patch tokens only; the class token's position is folded into it
    out["cls_token"] = cls + pos[:, :1]
    out["patch_embedding.position_embeddings"] = pos[:, 1:]
    for key, value in state.items():
        if key in special:
            continue
        m = block.match(key)
        if m:
            i, rest = m.groups()
            new = next((f"blocks.{i}.{dst}{rest[len(src):]}" for src, dst in inner.items() if rest.startswith(src)),
                       None)
        else:
            new = next((dst + key[len(src):] for src, dst in rename if key.startswith(src)), None)
        if new is None:
            ignored[key] = "no counterpart in medclass's ViT (a variant it does not build)"
            continue
        out[new] = value
    return out, ignored


def map_to_monai(
    state: Mapping[str, torch.Tensor], layout: SourceLayout, own: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], dict[str, str], dict[str, str]]:
    """Rename a recognised state dict to MONAI backbone names.

    Args:
        state: the source tensors (unwrapped).
        layout: its :class:`SourceLayout` (not ``medclass``/``monai``).
        own: the target backbone's ``state_dict()`` (MONAI names): tensors the source lacks but that have an
            exact equivalent are derived from it (shapes) where needed.

    Returns:
        ``(mapped, ignored, derived)``: tensors under MONAI names; source keys left out ``{key: reason}``; MONAI keys
        filled with an exact equivalent of the source's computation ``{key: reason}`` (e.g. a zero bias).
    """
    out: dict[str, torch.Tensor] = {}
    ignored: dict[str, str] = {}
    derived: dict[str, str] = {}
    if layout.family == "vit":
        out, ignored = _map_vit(state, layout)
    elif layout.family == "densenet":
        for key, value in state.items():
            if key.startswith("classifier."):
                out["class_layers.out." + key[len("classifier."):]] = value
                continue
            m = _DENSE_OLD.match(key)
            if m:
                key = f"{m.group(1)}.{m.group(2)}{m.group(3)}.{m.group(4)}"
            m = _DENSE_NEW.match(key)
            out[f"{m.group(1)}.layers.{m.group(2)}" if m else key] = value
    else:  # resnet (torchvision / timm / MedicalNet names are MONAI's)
        for key, value in state.items():
            if key.startswith("conv_seg."):
                ignored[key] = "MedicalNet's segmentation head (medclass adds a classification head)"
                continue
            out[key] = value
        if layout.name == "medicalnet_resnet" and not any(".downsample." in k for k in state):
            for key in _shortcut_a_as_b(out, own):
                derived[key] = "MedicalNet's parameter-free shortcut A as a 1x1 conv + BN (identity in eval mode)"
    for key, t in own.items():
        if key.endswith("downsample.0.bias") and key not in out and key[: -len("bias")] + "weight" in out:
            out[key] = torch.zeros_like(t)
            derived[key] = "zero: the source's shortcut convolution has no bias"
        if ".norm_cross_attn." in key and key not in out:
            out[key] = t.clone()
            derived[key] = "unused by MONAI's transformer block without cross-attention (kept as initialised)"
    return out, ignored, derived

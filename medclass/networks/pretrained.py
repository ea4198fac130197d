"""Start a medclass classifier from published pretrained weights (ImageNet, chest X-ray, 3D medical) or a medclass run.

``pretrained`` (of :func:`~medclass.networks.build_classifier` and the bundles) is a name of
:data:`~medclass.networks.hub.WEIGHTS` (``"torchvision:resnet18"``, ``"xrv:densenet121-res224-all"``,
``"medicalnet:resnet18"`` ...), downloaded once and verified, or a file path whose layout is recognised from its keys
(:func:`~medclass.networks.sources.detect_layout`). A source fixes the architecture arguments its tensors need
(arch, width, stem, ViT patch size; :func:`architecture_args`): ``None``/``"auto"`` settings take them, an explicit
setting that contradicts them is an error naming both.

What the weights expect of their inputs travels with them (:class:`Preprocessing`): medclass's presets give the
network ``(x - 0.5) / 0.25`` of images scaled to ``[0, 1]`` (``input_norm``); the source's value range and mean/std
(ImageNet's, TorchXRayVision's ``[-1024, 1024]``) are an affine map of that, folded into the first convolution and
its BatchNorm's running mean (or the ViT patch embedding's bias). Grey images into RGB weights: the first convolution
is summed over its input channels, which computes exactly what the RGB network computes on a grey image repeated
to three channels. The fold is exact away from the image border; at the border the network now pads with the
value of a black pixel instead of the source's mean colour (3 pixels of the first feature map of a ResNet).
The record is stored in the model's metadata (``model.pretrained``), so evaluation and inference see it.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from medclass.networks.checkpoint import PickledObject, load_checkpoint_object, unwrap_state_dict
from medclass.networks.checkpoint import fmt_keys as _fmt
from medclass.networks.hub import IMAGENET, INCEPTION, MEDICALNET, WEIGHTS, XRV, XRV_LABELS, fetch, sha256_of
from medclass.networks.sources import SourceLayout, detect_layout, map_to_monai
from medclass.networks.spec import choose_patch_size, choose_stem, family
from medclass.networks.weights import load_weights

logger = logging.getLogger(__name__)

__all__ = ["INPUT_NORM", "PretrainedReport", "PretrainedSource", "Preprocessing", "architecture_args",
           "inspect_pretrained", "load_pretrained"]

INPUT_NORM: tuple[float, float] = (0.5, 0.25)
"""medclass presets' fixed normalisation: the network sees ``(x - 0.5) / 0.25`` of images scaled to ``[0, 1]``."""

_LAYOUT_PREPROCESSING = {
    "torchvision_resnet": IMAGENET, "torchvision_densenet": IMAGENET, "torchvision_vit": IMAGENET,
    "timm_vit": INCEPTION,  # timm's ViT (AugReg) default; DeiT files use ImageNet's: load those by name
    "xrv_densenet": XRV, "medicalnet_resnet": MEDICALNET,
}
# other names of findings (normalised: lower case, single spaces) -> TorchXRayVision's
_LABEL_ALIASES = {"pleural effusion": "effusion", "airspace opacity": "lung opacity", "nodule mass": "nodule",
                  "pleural thickening": "pleural thickening", "enlarged cardiac silhouette": "cardiomegaly"}


@dataclass
class Preprocessing:
    """What the pretrained weights expect of their inputs, and what medclass did about it.

    Attributes:
        source_channels: input channels of the source's first convolution.
        channels: how the model's input channels were adapted: ``"as_is"``, ``"sum"`` (grey input, RGB weights: the
            first convolution summed over its input channels, i.e. the grey image repeated to 3 channels) or
            ``"mean"`` (N channels into 1-channel weights: the channels' mean is what the source sees).
        value_range: the range the source maps ``[0, 1]`` images to before ``mean``/``std`` (``None``: not affine,
            see ``intensity``).
        mean: per-channel mean subtracted by the source (after ``value_range``).
        std: per-channel std the source divides by.
        image_size: the input size the source was trained at (CNNs accept others; ViTs get their position
            embeddings resampled).
        folded: the value map was folded into the first layer: the network takes medclass preset outputs
            (``input_norm``) as they are. ``False``: the inputs must be given as the source expects.
        input_norm: ``(mean, std)`` of the medclass normalisation the fold assumed.
        intensity: a note where the source's intensity normalisation is not an affine map (MedicalNet's z-score).
    """

    source_channels: int
    channels: str = "as_is"
    value_range: tuple[float, float] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    image_size: tuple[int, ...] | None = None
    folded: bool = False
    input_norm: tuple[float, float] = INPUT_NORM
    intensity: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain-python form (stored in the model metadata)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


@dataclass
class PretrainedSource:
    """A read and recognised weight file (see :func:`inspect_pretrained`)."""

    name: str
    path: Path
    layout: SourceLayout
    state: dict[str, torch.Tensor]
    labels: tuple[str, ...] = ()
    preprocessing: dict[str, Any] = field(default_factory=dict)

    @property
    def display(self) -> str:
        """The name and file for messages."""
        return f"{self.name} ({self.path})" if self.name else str(self.path)


@dataclass
class PretrainedReport:
    """What :func:`load_pretrained` did.

    Attributes:
        source: the name or file given.
        file: the file read.
        layout: its layout name.
        loaded: model keys loaded from the file (medclass names).
        reinitialised: model keys left as initialised ``{key: reason}`` (e.g. the new classification head).
        derived: model keys computed from an exact equivalent of the source ``{key: reason}``.
        ignored: source keys not used ``{key: reason}``.
        label_rows: head rows transferred ``{model label: source label}`` (TorchXRayVision).
        preprocessing: the :class:`Preprocessing` record.
    """

    source: str
    file: str
    layout: str
    loaded: list[str] = field(default_factory=list)
    reinitialised: dict[str, str] = field(default_factory=dict)
    derived: dict[str, str] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)
    label_rows: dict[str, str] = field(default_factory=dict)
    preprocessing: Preprocessing | None = None

    def summary(self) -> str:
        """One paragraph for the log."""
        parts = [f"{len(self.loaded)} tensors loaded from {self.file} ({self.layout})"]
        if self.label_rows:
            parts.append(f"head rows transferred: {self.label_rows}")
        for what, d in (("re-initialised", self.reinitialised), ("derived", self.derived),
                        ("ignored", self.ignored)):
            d = {k: r for k, r in d.items() if not k.endswith("num_batches_tracked")}
            if d:
                reasons: dict[str, list[str]] = {}
                for k, r in d.items():
                    reasons.setdefault(r, []).append(k)
                parts.append(f"{what}: " + "; ".join(f"{_fmt(ks, len(ks))} ({r})" for r, ks in reasons.items()))
        return ", ".join(parts)


def _resolve(source: str | os.PathLike) -> tuple[str, Path]:
    text = str(source)
    if text in WEIGHTS:
        return text, fetch(text)
    path = Path(text).expanduser()
    if not path.exists() and re.match(r"^(torchvision|timm|xrv|medicalnet):", text):
        raise ValueError(f"unknown pretrained weights {text!r}: known names are {sorted(WEIGHTS)}")
    return "", path


def inspect_pretrained(source: str | os.PathLike | PretrainedSource) -> PretrainedSource:
    """Read a weight file (by name or path, ``weights_only=True``) and recognise its layout.

    Raises:
        FileNotFoundError: no such file (or a name not cached and not downloadable).
        ValueError: unreadable/truncated file, unrecognised layout, or a named file whose layout is not the expected
            one (the message names the file).
    """
    if isinstance(source, PretrainedSource):
        return source
    name, path = _resolve(source)
    obj = load_checkpoint_object(path)
    hint, attrs = "", {}
    if isinstance(obj, PickledObject):
        hint, attrs = obj.pickled_name.partition(".")[0], obj.attributes()
    state = unwrap_state_dict(obj, str(path))
    try:
        layout = detect_layout(state, hint)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    entry = WEIGHTS.get(name)
    if entry is not None and entry.layout and layout.name != entry.layout:
        raise ValueError(f"{path} should hold {name} ({entry.layout} layout) but its keys are {layout.name}'s")
    labels: tuple[str, ...] = entry.labels if entry is not None else ()
    if not labels and layout.name == "xrv_densenet":
        pickled = attrs.get("targets") or attrs.get("pathologies")
        labels = tuple(pickled) if isinstance(pickled, (list, tuple)) else XRV_LABELS
        if len(labels) != layout.num_classes:
            raise ValueError(f"{path}: {len(labels)} label names for a head of {layout.num_classes} outputs")
    pre = dict(entry.preprocessing) if entry is not None else dict(_LAYOUT_PREPROCESSING.get(layout.name, {}))
    return PretrainedSource(name, path, layout, state, tuple(labels), pre)


def architecture_args(
    spec: PretrainedSource,
    *,
    arch: str,
    spatial_dims: int,
    width: int | None,
    stem: str,
    image_size: tuple[int, ...] | None,
    inflate: str | None,
    arch_kwargs: dict[str, Any],
) -> tuple[int | None, str, dict[str, Any]]:
    """The ``(width, stem, arch_kwargs)`` a pretrained source fixes, checked against the explicit settings.

    ``None`` width and ``"auto"`` stem take the source's values, but ``"auto"`` must then pick the source's stem for
    ``image_size`` too (so that a later build without ``pretrained``, e.g. by the evaluate workflow, gives the same
    network); likewise the ViT patch size chosen automatically must be the source's.

    Raises:
        ValueError: a contradiction (the message names the setting, its value and the source's).
    """
    lay = spec.layout
    if lay.name in ("medclass", "monai"):
        return width, stem, arch_kwargs
    src = spec.display
    kw = dict(arch_kwargs)
    what = lay.arch or f"{lay.family} ({lay.fixed})"
    if family(arch) != lay.family or (lay.arch and arch != lay.arch):
        hint = " (medclass's timm-compatible ViTs are arch='vit_small' and 'vit_base')" if lay.family == "vit" else ""
        raise ValueError(f"pretrained {src} holds {what} weights ({lay.name}); arch={arch!r} contradicts it{hint}")
    if not lay.arch:
        raise ValueError(f"pretrained {src} holds {lay.family} weights of a size medclass does not build: {lay.fixed}")
    if lay.spatial_dims == 3 and spatial_dims != 3:
        raise ValueError(f"pretrained {src} holds 3D weights; spatial_dims={spatial_dims} contradicts it")
    if lay.spatial_dims == 2 and spatial_dims == 3 and not inflate:
        raise ValueError(f"pretrained {src} holds 2D weights: for a 3D model pass inflate='i3d', 'center' or 'acs'")
    if lay.family == "vit":
        patch = tuple(lay.fixed["patch_size"])
        given = kw.get("patch_size")
        chosen = tuple(given) if isinstance(given, (list, tuple)) else (given,) * len(patch) if given else None
        if chosen is None and image_size is not None:
            chosen = choose_patch_size(image_size, spatial_dims)
            if chosen != patch:
                raise ValueError(
                    f"patch_size 'auto' picks {list(chosen)} for image_size {list(image_size)}, but pretrained {src} "
                    f"has patches of {list(patch)}: pass patch_size={patch[0]} (image_size a multiple of it)"
                )
        elif chosen is not None and chosen != patch:
            raise ValueError(f"patch_size={given!r} contradicts pretrained {src} (patches of {list(patch)})")
        for k in ("hidden_size", "mlp_dim", "num_layers", "num_heads", "qkv_bias"):
            if k in kw and kw[k] != lay.fixed[k]:
                raise ValueError(f"{k}={kw[k]!r} contradicts pretrained {src} ({k}={lay.fixed[k]!r})")
        return width, stem, kw
    fixed_w = lay.fixed["width"]
    if width is not None and width != fixed_w:
        raise ValueError(f"width={width} contradicts pretrained {src} (width {fixed_w}): pass width=None or {fixed_w}")
    fixed_stem = lay.fixed["stem"]
    if stem == "auto":
        auto = choose_stem(image_size, spatial_dims) if image_size is not None else "standard"
        if auto != fixed_stem:
            raise ValueError(
                f"stem='auto' picks {auto!r} for image_size {list(image_size or [])}, but pretrained {src} has the "
                f"{fixed_stem!r} stem: pass stem={fixed_stem!r} (in a bundle, stem: {fixed_stem} in configs/"
                "common.yaml, so that evaluation and inference build the same network)"
            )
    elif stem != fixed_stem:
        raise ValueError(f"stem={stem!r} contradicts pretrained {src} (the {fixed_stem!r} stem)")
    for k in ("growth_rate", "block_config", "layers"):
        if k in kw and k in lay.fixed:
            given = list(kw[k]) if isinstance(kw[k], (list, tuple)) else kw[k]
            if given != lay.fixed[k]:
                raise ValueError(f"{k}={kw[k]!r} contradicts pretrained {src} ({k}={lay.fixed[k]!r})")
    if kw.get("shortcut_type", "B") == "A" and lay.fixed.get("shortcut_type") != "A":
        raise ValueError(f"shortcut_type='A' contradicts pretrained {src} (it has shortcut convolutions, type B)")
    return fixed_w, fixed_stem, kw


def _norm_label(name: str) -> str:
    n = re.sub(r"[\s_\-/]+", " ", name.strip().lower())
    return _LABEL_ALIASES.get(n, n)


def _fold_first_conv(mapped: dict, lay: SourceLayout, pre: dict, model_in: int, fold: bool,
                     input_norm: tuple[float, float], src: str) -> Preprocessing:
    """Adapt the first convolution to the model's input channels and fold the source's value map into it."""
    key = lay.first_conv + ".weight"
    w = mapped[key]
    src_c = int(w.shape[1])
    mean, std, vrange = pre.get("mean"), pre.get("std"), pre.get("value_range")
    affine = fold and mean is not None and std is not None and vrange is not None
    a = torch.ones(src_c, dtype=torch.float64)
    b = torch.zeros(src_c, dtype=torch.float64)
    if affine:
        if len(mean) not in (1, src_c) or len(std) not in (1, src_c):
            raise ValueError(f"{src}: mean/std {mean}/{std} do not fit a first convolution of {src_c} channels")
        m = torch.tensor(mean, dtype=torch.float64).expand(src_c)
        s = torch.tensor(std, dtype=torch.float64).expand(src_c)
        lo, hi = vrange
        # source input = (lo + (hi - lo) * x01 - mean) / std, with x01 = input_norm[0] + input_norm[1] * x (medclass)
        a = (hi - lo) * input_norm[1] / s
        b = (lo + (hi - lo) * input_norm[0] - m) / s
    view = (1, src_c) + (1,) * (w.dim() - 2)
    w64 = w.double()
    scaled = w64 * a.view(view)
    const = (w64 * b.view(view)).sum(dim=tuple(range(1, w.dim())))
    if model_in == src_c:
        new, channels = scaled, "as_is"
    elif model_in == 1:
        new, channels = scaled.sum(dim=1, keepdim=True), "sum"
    elif src_c == 1:
        new, channels = scaled.repeat(1, model_in, *([1] * (w.dim() - 2))) / model_in, "mean"
    else:
        raise ValueError(
            f"{src}: its first convolution takes {src_c} input channels, the model {model_in}; medclass adapts "
            "RGB weights to 1 channel (summed) and 1-channel weights to N channels (averaged) only"
        )
    mapped[key] = new.to(w.dtype)
    if affine and bool(const.abs().max() > 0):
        if lay.first_norm:
            rm = lay.first_norm + ".running_mean"
            mapped[rm] = (mapped[rm].double() - const).to(mapped[rm].dtype)
        else:
            bias = lay.first_conv + ".bias"
            mapped[bias] = (mapped[bias].double() + const).to(mapped[bias].dtype)
    size = pre.get("image_size")
    return Preprocessing(
        src_c, channels, tuple(vrange) if vrange is not None else None, tuple(mean) if mean is not None else None,
        tuple(std) if std is not None else None, tuple(size) if size is not None else None, affine,
        tuple(input_norm), pre.get("intensity", ""),
    )


def _resample_pos_embed(pos: torch.Tensor, grid: tuple[int, ...], new: tuple[int, ...]) -> torch.Tensor:
    """Position embeddings ``(1, prod(grid), D)`` bicubically resampled to another patch grid (as timm does)."""
    d = pos.shape[-1]
    img = pos.reshape(1, *grid, d).permute(0, 3, 1, 2).float()
    img = F.interpolate(img, size=new, mode="bicubic", align_corners=False, antialias=True)
    return img.permute(0, 2, 3, 1).reshape(1, -1, d).to(pos.dtype)


def _transfer_head(model: nn.Module, spec: PretrainedSource, mapped: dict, head: str, skip_head: bool,
                   own: dict, report: PretrainedReport) -> None:
    """Head rows of findings both share come from the source; the other rows keep the model's initialisation."""
    w_key, b_key = head + ".weight", head + ".bias"
    src_w, src_b = mapped.pop(w_key, None), mapped.pop(b_key, None)
    mapped[w_key], mapped[b_key] = own[w_key].clone(), own[b_key].clone()
    if skip_head or src_w is None or not spec.labels:
        reason = "new classification head" + (" (skip_head)" if skip_head else "")
        report.reinitialised.update({w_key: reason, b_key: reason})
        return
    index = {_norm_label(n): i for i, n in enumerate(spec.labels) if n}
    names = list(getattr(model, "label_names", []))
    for row, name in enumerate(names):
        j = index.get(_norm_label(name))
        if j is not None:
            mapped[w_key][row] = src_w[j].to(mapped[w_key].dtype)
            mapped[b_key][row] = src_b[j].to(mapped[b_key].dtype)
            report.label_rows[name] = spec.labels[j]
    new = [n for n in names if n not in report.label_rows]
    if new:
        reason = f"new rows for the findings the source does not predict: {new}"
        report.reinitialised.update({w_key: reason, b_key: reason})


def load_pretrained(
    model: nn.Module,
    source: str | os.PathLike | PretrainedSource,
    *,
    skip_head: bool = False,
    inflate: str | None = None,
    fold: bool = True,
    input_norm: tuple[float, float] = INPUT_NORM,
    strict: bool = True,
) -> PretrainedReport:
    """Load a pretrained source into a medclass :class:`~medclass.networks.Classifier`.

    medclass checkpoints and plain MONAI states go through :func:`~medclass.networks.load_weights` as before.
    Published layouts are mapped key by key (:func:`~medclass.networks.sources.map_to_monai`); their ImageNet
    heads are replaced by the model's new head, TorchXRayVision's head rows are transferred for the findings both
    share (by name: ``Effusion``/``effusion``/``Pleural Effusion`` ...), 2D weights are inflated into 3D models
    (``inflate``), and the first layer is adapted (see the module doc).

    Args:
        model: the classifier (built with the architecture the source fixes, see :func:`architecture_args`).
        source: a name of :data:`~medclass.networks.hub.WEIGHTS`, a file, or an inspected source.
        skip_head: start every output from scratch (no head rows transferred; medclass checkpoints: no head,
            thresholds or label names).
        inflate: 2D source into a 3D model: ``"i3d"``, ``"center"`` or ``"acs"``.
        fold: fold the source's value range / mean / std into the first layer (default); ``False`` leaves the
            weights as published (the inputs must then be normalised as :attr:`Preprocessing` says).
        input_norm: ``(mean, std)`` of the normalisation medclass applies to ``[0, 1]`` images (the presets').
        strict: refuse any key of the model the source does not cover (other than those listed as
            re-initialised or derived) and any source key the mapping does not place.

    Returns:
        A :class:`PretrainedReport` (also logged); the model's ``pretrained`` attribute records the source.

    Raises:
        FileNotFoundError: missing file.
        ValueError: unreadable file, unrecognised layout, an unexpected missing/extra/mis-shaped key, an
            input-channel count that cannot be adapted (every message names the file).
    """
    spec = inspect_pretrained(source)
    lay = spec.layout
    if lay.name in ("medclass", "monai"):
        lr = load_weights(model, spec.path, skip_head=skip_head, strict=strict, inflate=inflate)
        report = PretrainedReport(str(source), str(spec.path), lay.name, list(lr.loaded_keys),
                                  {k: "not in the checkpoint" for k in lr.missing_keys},
                                  ignored={k: "skip_head" for k in lr.skipped_keys})
        logger.info("pretrained: %s", report.summary())
        return report
    src = spec.display
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module) or not hasattr(model, "in_channels"):
        raise TypeError(f"load_pretrained needs a medclass Classifier, got {type(model).__name__}")
    if family(str(getattr(model, "arch", ""))) != lay.family:
        raise ValueError(f"pretrained {src} holds {lay.arch or lay.family} weights ({lay.name}); the model is a "
                         f"{getattr(model, 'arch', type(model).__name__)}")
    own = dict(backbone.state_dict())
    report = PretrainedReport(str(source), str(spec.path), lay.name)
    mapped, report.ignored, report.derived = map_to_monai(spec.state, lay, own)
    if lay.family == "vit":
        src_grid, grid = tuple(lay.fixed["grid"]), tuple(getattr(model, "grid", ()) or ())
        if grid and grid != src_grid:
            key = "patch_embedding.position_embeddings"
            mapped[key] = _resample_pos_embed(mapped[key], src_grid, grid)
            report.derived[key] = f"position embeddings resampled (bicubic) from a {src_grid} to a {grid} patch grid"
    _transfer_head(model, spec, mapped, lay.head, skip_head, own, report)
    report.preprocessing = _fold_first_conv(mapped, lay, spec.preprocessing, int(model.in_channels), fold,
                                            input_norm, src)
    missing = sorted(k for k in own if k not in mapped)
    unexpected = sorted(k for k in mapped if k not in own)
    for k in [k for k in missing if k.endswith("num_batches_tracked")]:
        mapped[k] = own[k]
        report.reinitialised[k] = "BatchNorm step counter (not in the file)"
        missing.remove(k)
    bad = [(k, list(mapped[k].shape), list(own[k].shape)) for k in mapped if k in own
           and tuple(mapped[k].shape) != tuple(own[k].shape) and not (inflate and mapped[k].dim() + 1 == own[k].dim())]
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"{len(missing)} model keys it lacks {_fmt(missing, len(missing))}")
        if unexpected:
            parts.append(f"{len(unexpected)} keys the model lacks {_fmt(unexpected, len(unexpected))}")
        if bad:
            mm = [f"{k}: file {a} vs model {b}" for k, a, b in bad]
            parts.append(f"{len(bad)} mis-shaped keys {_fmt(mm, len(mm))}")
        msg = f"pretrained {src} ({lay.name}) does not fit {type(model).__name__} {model.arch}: " + "; ".join(parts)
        if strict:
            raise ValueError(msg)
        logger.warning("%s; leaving those as initialised (strict=False)", msg)
        for k in unexpected + [k for k, _, _ in bad]:
            mapped.pop(k, None)
        for k in missing:
            mapped[k] = own[k]
            report.reinitialised[k] = "not in the file (strict=False)"
    full = {f"backbone.{k}": v for k, v in mapped.items()}
    for k, v in model.state_dict().items():
        if not k.startswith("backbone.") and k != "_extra_state":
            full[k] = v
    try:
        load_weights(model, full, inflate=inflate)
    except ValueError as e:
        raise ValueError(f"pretrained {src}: {e}") from e
    partial = bool(report.label_rows)
    skip = {k for k, r in report.reinitialised.items() if not (partial and r.startswith("new rows"))}
    report.loaded = sorted(f"backbone.{k}" for k in mapped if k not in skip and k not in report.derived)
    report.reinitialised = {f"backbone.{k}": r for k, r in report.reinitialised.items()}
    report.derived = {f"backbone.{k}": r for k, r in report.derived.items()}
    model.pretrained = {
        "source": spec.name or spec.path.name, "file": spec.path.name, "sha256": sha256_of(spec.path),
        "layout": lay.name, "preprocessing": report.preprocessing.to_dict(), "label_rows": dict(report.label_rows),
    }
    if spec.preprocessing.get("intensity"):
        logger.info("pretrained %s expects: %s", src, spec.preprocessing["intensity"])
    size = spec.preprocessing.get("image_size")
    if size and getattr(model, "image_size", None) and tuple(model.image_size) != tuple(size):
        logger.info("pretrained %s was trained at %s px; this model takes %s", src, list(size), list(model.image_size))
    logger.info("pretrained: %s", report.summary())
    return report

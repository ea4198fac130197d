"""Write saliency maps for every evaluated batch: PNG overlays and ``.npy`` maps (2D), NIfTI maps and PNG
montages (3D), TensorBoard images.

The maps are computed by :func:`medclass.saliency.saliency_maps` (at the evaluator's precision) on the tensor the
model sees, i.e. after the bundle's preprocessing (windowing, re-orientation, resampling to ``image_size``);
Grad-CAM and Grad-CAM++ maps come from the evaluator's own forward pass where its inferer makes one plain pass (no
TTA, MC-dropout or ensemble), so a saliency run costs about what an inference run costs. They are therefore in the
*preprocessed image's space*: a 2D ``.npy`` map has the shape of the network input, in display order (rows,
columns); a 3D NIfTI map carries the affine of the preprocessed tensor (its MetaTensor ``affine``), so a viewer
that honours affines (ITK-SNAP, 3D Slicer, FSLeyes) overlays it on the original file at the right place in
world coordinates, even though the voxel grid differs when the preset resamples. With ``size_mode: crop_pad``
and no ``spacing``, the grid is the file's own up to the crop/pad.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from medclass.files import AtomicStream
from medclass.saliency import (
    CamRecord,
    SaliencyMethod,
    cam_forward,
    model_state,
    resolve_target_layer,
)
from medclass.transforms.post import Probabilitiesd
from medclass.vocab import TASKS, resolve_thresholds, unwrap_model

logger = logging.getLogger(__name__)

__all__ = ["SaliencyHandler", "SaliencyOutput", "TargetChoice", "default_targets", "overlay_png", "overlay_rgb",
           "safe_name", "most_salient_slices"]

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str, max_len: int = 100) -> str:
    """A file-name-safe version of an image id or label (other characters become ``_``)."""
    s = _SAFE.sub("_", str(text)).strip("._") or "item"
    return s[:max_len]


def default_targets(
    probs: np.ndarray, thresholds: np.ndarray, task: str = "multilabel", max_targets: int = 3, negatives: bool = False
) -> list[list[int]]:
    """The labels to explain for each image.

    Args:
        probs: probabilities ``(B, L)``.
        thresholds: decision thresholds ``(L,)`` (multi-label).
        task: ``multilabel`` / ``binary``: every label with ``prob >= threshold``, most probable first;
            ``multiclass``: the arg-max class.
        max_targets: at most this many labels per image (>= 1).
        negatives: for an image with no positive label, explain the most probable label anyway (else none).

    Returns:
        One list of label indices per image (possibly empty).
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probabilities must be (B, L), got shape {probs.shape}")
    cap = max(1, int(max_targets))
    out: list[list[int]] = []
    for row in probs:
        if task == "multiclass":
            out.append([int(np.argmax(row))])
            continue
        pos = [int(i) for i in np.argsort(-row, kind="stable") if row[i] >= thresholds[i]]
        if not pos and negatives:
            pos = [int(np.argmax(row))]
        out.append(pos[:cap])
    return out


def overlay_rgb(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45, cmap: str = "jet") -> np.ndarray:
    """RGB ``(H, W, 3)`` uint8 blend of a grey image and a ``[0, 1]`` heat map (high = important)."""
    from matplotlib import colormaps

    img = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(img, [0.5, 99.5]) if img.size else (0.0, 1.0)
    img = np.clip((img - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(img)
    col = colormaps[cmap](np.clip(heat, 0, 1))[..., :3]
    a = alpha * np.clip(heat, 0, 1)[..., None] ** 0.5
    rgb = (1 - a) * img[..., None] + a * col
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def overlay_png(path: str | os.PathLike, image: np.ndarray, heat: np.ndarray, title: str, min_side: int = 320) -> None:
    """Write a 2D overlay PNG: the :func:`overlay_rgb` blend (enlarged without smoothing to at least ``min_side``
    pixels on its long side), ``title`` above it, a colour bar from 0 to 1 beside it and the scale's meaning below.

    Drawn with Pillow (a few milliseconds; a matplotlib figure took about 100 ms per map, more than the network).
    """
    from matplotlib import colormaps
    from PIL import Image, ImageDraw

    rgb = overlay_rgb(image, heat)
    h, w = rgb.shape[:2]
    scale = max(1, math.ceil(min_side / max(h, w)))
    shown = Image.fromarray(rgb).resize((w * scale, h * scale), Image.NEAREST)
    pad, top, bottom, bar = 8, 22, 20, 14
    width, height = shown.width + 3 * pad + bar + 24, shown.height + top + bottom
    canvas = Image.new("RGB", (width, height), "white")
    canvas.paste(shown, (pad, top))
    ramp = np.linspace(1.0, 0.0, shown.height)[:, None].repeat(bar, axis=1)
    bar_rgb = (colormaps["jet"](ramp)[..., :3] * 255).astype(np.uint8)
    x_bar = shown.width + 2 * pad
    canvas.paste(Image.fromarray(bar_rgb), (x_bar, top))
    draw = ImageDraw.Draw(canvas)
    font, small = _fonts()
    draw.text((pad, 4), title, fill="black", font=font)
    draw.text((x_bar + bar + 3, top), "1", fill="black", font=small)
    draw.text((x_bar + bar + 3, top + shown.height - 11), "0", fill="black", font=small)
    draw.text((pad, top + shown.height + 4), "saliency (1 = most important)", fill="black", font=small)
    canvas.save(path, compress_level=1)  # fast zlib level: written per image and label, a few % larger


@functools.cache
def _fonts():
    """Pillow's bundled font at the title's and the labels' sizes (loaded once)."""
    from PIL import ImageFont

    return ImageFont.load_default(size=12), ImageFont.load_default(size=10)


def most_salient_slices(heat: np.ndarray, n: int, axis: int = -1) -> list[int]:
    """Indices (ascending) of the ``n`` slices along ``axis`` of a 3D map holding the most saliency."""
    axis = axis % heat.ndim
    sums = heat.sum(axis=tuple(a for a in range(heat.ndim) if a != axis))
    k = min(int(n), heat.shape[axis])
    return sorted(int(i) for i in np.argsort(-sums, kind="stable")[:k])


def _display(img2d: np.ndarray) -> np.ndarray:
    """Grey image for display, robustly scaled to [0, 1]."""
    lo, hi = np.percentile(img2d, [0.5, 99.5])
    return np.clip((img2d - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(img2d)


@dataclass(frozen=True)
class TargetChoice:
    """Which labels a saliency map is made for, per image.

    Args:
        labels: label names to explain for every image instead of the default (the predicted positives).
        max_targets: cap on labels explained per image (>= 1).
        negatives: for an image with no positive prediction, explain the most probable label anyway.
        thresholds: decision thresholds overriding the network's (a float or one per label).

    Raises:
        ValueError: ``max_targets`` below 1.
    """

    labels: Sequence[str] | None = None
    max_targets: int = 3
    negatives: bool = False
    thresholds: float | Sequence[float] | None = None

    def __post_init__(self) -> None:
        labels = [self.labels] if isinstance(self.labels, str) else self.labels
        max_targets = int(self.max_targets)
        if max_targets < 1:
            raise ValueError(f"max_targets must be >= 1, got {self.max_targets}")
        object.__setattr__(self, "labels", tuple(str(t) for t in labels) if labels else None)
        object.__setattr__(self, "max_targets", max_targets)
        object.__setattr__(self, "negatives", bool(self.negatives))

    def pick(self, probs: np.ndarray, thresholds: np.ndarray, task: str, label_names: Sequence[str]) -> list[list[int]]:
        """The label indices to explain for each image (rows of ``probs``)."""
        if self.labels:
            return [[list(label_names).index(t) for t in self.labels]] * len(probs)
        return default_targets(probs, thresholds, task, self.max_targets, self.negatives)


@dataclass(frozen=True)
class SaliencyOutput:
    """What :class:`SaliencyHandler` writes, and where it finds images and ids in a batch.

    Args:
        subdir: sub-folder of the handler's ``output_dir``.
        montage_slices: slices in a 3D montage.
        tb_images: overlays logged to TensorBoard per run.
        max_images: stop writing after this many images (``None``: all).
        write_png / write_npy: switch file kinds off (the 3D NIfTI map is always written).
        image_key / id_key: batch keys of the image and of the image id.
    """

    subdir: str = "saliency"
    montage_slices: int = 8
    tb_images: int = 8
    max_images: int | None = None
    write_png: bool = True
    write_npy: bool = True
    image_key: str = "image"
    id_key: str = "id"

    def __post_init__(self) -> None:
        object.__setattr__(self, "montage_slices", int(self.montage_slices))
        object.__setattr__(self, "tb_images", int(self.tb_images))
        object.__setattr__(self, "max_images", None if self.max_images is None else int(self.max_images))
        object.__setattr__(self, "write_png", bool(self.write_png))
        object.__setattr__(self, "write_npy", bool(self.write_npy))


#: The flat settings a config may give :class:`SaliencyHandler`, by the object they set.
METHOD_SETTINGS = ("target_layer", "method_kwargs")
TARGET_SETTINGS = ("max_targets", "negatives", "thresholds")
OUTPUT_SETTINGS = tuple(f.name for f in fields(SaliencyOutput))


class SaliencyHandler:
    """Computes saliency maps for each evaluator batch and writes them under ``<output_dir>/saliency/``.

    Files per image and explained label (``<id>`` is the datalist's image id, never a patient id; items
    without one are numbered ``item_000000`` ...):

    * 2D: ``<id>_<label>.png`` (image, heat map, label name and probability in the title, colour bar) and
      ``<id>_<label>.npy`` (the map ``(H, W)`` float32 in [0, 1], shape of the network input);
    * 3D: ``<id>_<label>.nii.gz`` (the map ``(X, Y, Z)`` with the affine of the preprocessed input) and
      ``<id>_<label>.png`` (montage of the ``montage_slices`` slices along the last axis holding the most
      saliency);
    * ``index.csv``: one row per map (id, label, probability, method, file names);
    * TensorBoard (with ``summary_writer``): the first ``tb_images`` overlays of each run as images
      ``saliency/<id>/<label>``.

    Args:
        output_dir: base folder; files go to ``output_dir/<output.subdir>``.
        network: the model (its ``thresholds`` buffer and ``label_names`` are read when the run starts, i.e.
            after checkpoint loading).
        method: a :class:`~medclass.saliency.SaliencyMethod` (method, Grad-CAM layer, options), or a method name of
            :data:`medclass.saliency.METHODS`.
        label_names: label order (default: the network's).
        task: ``multilabel`` / ``binary`` / ``multiclass``: how default targets are picked.
        targets: a :class:`TargetChoice`, or the label names to explain for every image instead of the default
            (predicted positives).
        output: a :class:`SaliencyOutput` (what is written; default: everything).
        summary_writer: a ``torch.utils.tensorboard.SummaryWriter`` (or ``None``).
        log_dir: TensorBoard folder for a writer the handler opens when the run starts (if no
            ``summary_writer``) and closes when it completes; ``None``: no TensorBoard images.
        settings: the same settings as flat keywords, as bundle configs give them: ``target_layer`` and
            ``method_kwargs`` (the method's options) for the :class:`~medclass.saliency.SaliencyMethod`;
            ``max_targets``, ``negatives``, ``thresholds`` for the :class:`TargetChoice`; the fields of
            :class:`SaliencyOutput` (``max_images``, ``montage_slices``, ``tb_images``, ``write_png``, ``write_npy``,
            ``subdir``, ``image_key``, ``id_key``).

    Raises:
        ValueError: an unknown method, method option or task, ``max_targets`` below 1.
        TypeError: an unknown setting, or a setting given both flat and inside its object.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        network: torch.nn.Module,
        method: str | SaliencyMethod = "gradcam",
        label_names: Sequence[str] | None = None,
        task: str = "multilabel",
        targets: Sequence[str] | TargetChoice | None = None,
        *,
        output: SaliencyOutput | None = None,
        summary_writer: Any = None,
        log_dir: str | os.PathLike | None = None,
        **settings: Any,
    ) -> None:
        unknown = sorted(set(settings) - set(METHOD_SETTINGS + TARGET_SETTINGS + OUTPUT_SETTINGS))
        if unknown:
            raise TypeError(f"SaliencyHandler got unknown setting(s) {unknown}")
        if task not in TASKS:
            raise ValueError(f"task must be multilabel, binary or multiclass, got {task!r}")
        method_kw = {k: settings[k] for k in METHOD_SETTINGS if k in settings}
        if isinstance(method, SaliencyMethod):
            _no_flat(method_kw, "method")
            self.method = method
        else:
            self.method = SaliencyMethod(str(method).lower(), method_kw.get("target_layer"),
                                         method_kw.get("method_kwargs") or {})
        target_kw = {k: settings[k] for k in TARGET_SETTINGS if k in settings}
        if isinstance(targets, TargetChoice):
            _no_flat(target_kw, "targets")
            self.choice = targets
        else:
            self.choice = TargetChoice(targets, **target_kw)
        output_kw = {k: settings[k] for k in OUTPUT_SETTINGS if k in settings}
        if output is not None:
            _no_flat(output_kw, "output")
        self.output = output if output is not None else SaliencyOutput(**output_kw)
        self.output_dir = Path(output_dir) / self.output.subdir
        self.network = network
        self.label_names = [str(n) for n in label_names] if label_names is not None else None
        self.task = task
        self.summary_writer = summary_writer
        self.log_dir = None if log_dir in (None, "") else str(log_dir)
        self._own_writer = False
        self.thresholds = None
        self.precision = "fp32"  # the evaluator's, read when the run starts: maps explain the prediction as made
        self._record: tuple[int, CamRecord] | None = None  # the evaluator's own forward pass of this batch (CAMs)
        self.written: list[dict[str, Any]] = []
        self._seen = 0
        self._tb_logged = 0
        self._index = None

    # ------------------------------------------------------------------ ignite
    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.COMPLETED, self._complete)

    @property
    def done(self) -> bool:
        """Whether ``max_images`` images have been explained."""
        return self.output.max_images is not None and self._seen >= self.output.max_images

    def _start(self, engine: Engine) -> None:
        names = list(getattr(self.network, "label_names", None) or [])
        if self.label_names is None:
            self.label_names = names
        elif names and names != self.label_names:
            raise ValueError(f"the loaded model was trained for labels {names}, but the config names {self.label_names}")
        self.thresholds = resolve_thresholds(self.choice.thresholds, self.network, self.label_names)
        if self.choice.labels:
            unknown = [x for x in self.choice.labels if x not in self.label_names]
            if unknown:
                raise ValueError(f"saliency targets {unknown} are not labels of the model {self.label_names}")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.precision = str(getattr(engine, "precision", "fp32"))
        # an evaluator attaches its handlers before it sets its inferer: wrapped here, when the run starts
        inferer = getattr(engine, "inferer", None)
        if self.method.one_pass and callable(getattr(inferer, "single", None)):
            engine.inferer = _OnePassInferer(inferer, self)
        self.written, self._seen, self._tb_logged = [], 0, 0
        self._index_file = AtomicStream(self.output_dir / "index.csv")  # replaces index.csv when the run completes
        self._index = self._index_file.open()
        self._index.write("id,label,probability,method,map,png\n")
        if self.summary_writer is None and self.log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.summary_writer = SummaryWriter(log_dir=self.log_dir)
            self._own_writer = True

    def _complete(self, engine: Engine) -> None:
        if self._index is not None:
            self._index_file.commit()
            self._index = None
        if self._own_writer and self.summary_writer is not None:
            self.summary_writer.close()
            self.summary_writer, self._own_writer = None, False
        logger.info("%d saliency maps (%s) written to %s", len(self.written), self.method.name, self.output_dir)

    # ------------------------------------------------------------------ per batch
    def _probs(self, engine: Engine, images: torch.Tensor) -> np.ndarray:
        out = engine.state.output
        preds = None
        if isinstance(out, dict) and "pred" in out:
            preds = out["pred"]
        elif isinstance(out, (list, tuple)) and out and isinstance(out[0], dict) and "pred" in out[0]:
            preds = [o["pred"] for o in out]
        if preds is not None:
            if isinstance(preds, torch.Tensor) and preds.dim() == 2:
                p = preds.detach().float().cpu().numpy()
            else:
                p = np.stack([np.asarray(torch.as_tensor(v).detach().float().cpu()).reshape(-1) for v in preds])
            # ``images`` may be the first rows of the batch only (max_images): their predictions are the first rows
            if p.ndim == 2 and p.shape[0] >= images.shape[0] and p.shape[1] == len(self.label_names):
                return p[: images.shape[0]]
        # no usable output: compute the probabilities as the evaluator does, in eval mode (the evaluator puts the
        # network back in its previous mode after each iteration, often train mode: BatchNorm would then use the
        # batch's statistics) and with the temperature stored in the model
        net = self.network
        with model_state(net), torch.no_grad():
            logits = net(torch.as_tensor(images).float().to(next(net.parameters()).device))
        probs = Probabilitiesd("pred", task=self.task, network=net)({"pred": logits.float()})["pred"]
        return probs.cpu().numpy()

    def _ids(self, ids: list, n: int) -> list[str]:
        if len(ids) != n or any(i is None or str(i) == "" for i in ids):
            return [f"item_{self._seen + k:06d}" for k in range(n)]
        return [safe_name(i) for i in ids]

    def _unpack(self, batch: Any) -> tuple[torch.Tensor, list, list[np.ndarray | None]]:
        """Images ``(B, C, *spatial)``, ids and per-image affines from a collated dict or a decollated list."""
        key, id_key = self.output.image_key, self.output.id_key
        if isinstance(batch, dict) and key in batch:
            images = batch[key]
            ids = list(batch.get(id_key, []))
            return images, ids, self._affines(images, images.shape[0])
        if isinstance(batch, (list, tuple)) and batch and all(isinstance(b, dict) for b in batch):
            if any(key not in b for b in batch):
                raise ValueError(f"SaliencyHandler needs batch items with the key {key!r}")
            imgs = [b[key] for b in batch]
            images = torch.stack([torch.as_tensor(i) for i in imgs])
            affines = [self._affines(i, 1)[0] for i in imgs]
            return images, [b.get(id_key) for b in batch], affines
        raise ValueError(f"SaliencyHandler needs batches as dicts (or lists of dicts) with the key {key!r}")

    def _iteration(self, engine: Engine) -> None:
        record, self._record = self._record, None
        max_images = self.output.max_images
        if self.done:
            return
        images, raw_ids, affines = self._unpack(engine.state.batch)
        if max_images is not None:
            keep = max_images - self._seen
            images, raw_ids, affines = images[:keep], raw_ids[:keep], affines[:keep]
        b = images.shape[0]
        probs = self._probs(engine, images)[:b]
        ids = self._ids(raw_ids, b)
        idx = self.choice.pick(probs, self.thresholds, self.task, self.label_names)
        t_max = max((len(i) for i in idx), default=0)
        if t_max:
            padded = torch.tensor([i + [i[0] if i else 0] * (t_max - len(i)) for i in idx], dtype=torch.long)
            if record is not None and record[0] == b:  # the evaluator's forward pass: no second one
                net, (_, cams) = unwrap_model(self.network), record
                maps = self.method.record_maps(net, cams, padded.to(cams.logits.device), images.shape[2:]).cpu().numpy()
            else:
                device = next(self.network.parameters()).device
                maps = self.method.maps(self.network, torch.as_tensor(images).to(device), targets=padded,
                                        precision=self.precision).numpy()
            img_np = torch.as_tensor(images).detach().float().cpu().numpy()
            for k in range(b):
                for j, li in enumerate(idx[k]):
                    self._write(engine, ids[k], self.label_names[li], float(probs[k, li]), img_np[k], maps[k, j],
                                affines[k])
        self._seen += b

    @staticmethod
    def _affines(images: Any, b: int) -> list[np.ndarray | None]:
        aff = getattr(images, "affine", None)
        if aff is None:
            meta = getattr(images, "meta", None) or {}
            aff = meta.get("affine")
        if aff is None:
            return [None] * b
        a = np.asarray(torch.as_tensor(aff).detach().cpu(), dtype=np.float64)
        if a.ndim == 2:
            a = np.broadcast_to(a, (b, *a.shape))
        return [a[k] for k in range(b)] if a.shape[0] >= b else [None] * b

    def _write(self, engine, image_id, label, prob, image, heat, affine) -> None:
        stem = f"{image_id}_{safe_name(label)}"
        title = f"{label}  p={prob:.2f}  ({self.method.name})"
        map_file, png_file = "", ""
        if heat.ndim == 2:
            if self.output.write_npy:
                map_file = stem + ".npy"
                np.save(self.output_dir / map_file, heat.astype(np.float32))
            if self.output.write_png:
                png_file = stem + ".png"
                self._png_2d(self.output_dir / png_file, image.mean(axis=0), heat, title)
            tb_rgb = overlay_rgb(image.mean(axis=0), heat)
        else:
            import nibabel as nib

            map_file = stem + ".nii.gz"
            aff = affine if affine is not None else np.eye(4)
            if affine is None:
                logger.warning("no affine for %s: NIfTI map written with an identity affine", image_id)
            img = nib.Nifti1Image(heat.astype(np.float32), aff)
            img.header.set_xyzt_units("mm")
            nib.save(img, str(self.output_dir / map_file))
            vol = image.mean(axis=0)
            slices = most_salient_slices(heat, self.output.montage_slices)
            if self.output.write_png:
                png_file = stem + ".png"
                self._png_montage(self.output_dir / png_file, vol, heat, slices, title)
            z = slices[int(np.argmax([heat[..., s].sum() for s in slices]))] if slices else heat.shape[-1] // 2
            tb_rgb = overlay_rgb(vol[..., z].T[::-1], heat[..., z].T[::-1])
        if self.summary_writer is not None and self._tb_logged < self.output.tb_images:
            self.summary_writer.add_image(
                f"saliency/{image_id}/{safe_name(label)}", tb_rgb, engine.state.epoch, dataformats="HWC"
            )
            self._tb_logged += 1
        if self._index is not None:
            self._index.write(f"{image_id},{label},{prob:.6f},{self.method.name},{map_file},{png_file}\n")
            self._index.flush()
        self.written.append({"id": image_id, "label": label, "probability": prob, "map": map_file, "png": png_file})

    @staticmethod
    def _png_2d(path: Path, image: np.ndarray, heat: np.ndarray, title: str) -> None:
        overlay_png(path, image, heat, title)

    @staticmethod
    def _png_montage(path: Path, vol: np.ndarray, heat: np.ndarray, slices: list[int], title: str) -> None:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        n = max(1, len(slices))
        cols = min(4, n)
        rows = math.ceil(n / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols + 0.8, 2.4 * rows + 0.5), dpi=100, squeeze=False)
        disp = _display(vol)
        im = None
        for a in axes.flat:
            a.axis("off")
        for a, s in zip(axes.flat, slices):
            # axes 0/1 of the (X, Y, Z) volume shown as columns/rows, Y up (RAS: anterior up, patient left right)
            a.imshow(disp[..., s].T, cmap="gray", origin="lower", interpolation="nearest")
            im = a.imshow(heat[..., s].T, cmap="jet", alpha=0.4, vmin=0, vmax=1, origin="lower")
            a.set_title(f"slice {s}", fontsize=8)
        fig.suptitle(title, fontsize=9)
        if im is not None:
            cb = fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.03, pad=0.02)
            cb.set_label("saliency", fontsize=7)
            cb.ax.tick_params(labelsize=7)
        fig.savefig(path)
        plt.close(fig)


class _OnePassInferer:
    """The evaluator's inferer, with the saliency handler's CAM taken from the prediction's own forward pass.

    Where the inner inferer makes one plain forward pass (:meth:`medclass.inferers.PredictionInferer.single`), that
    pass runs as :func:`medclass.saliency.cam_forward` (the same logits; the layers after the Grad-CAM layer record
    gradients) and the handler computes the batch's maps from it when the iteration completes, instead of a second
    pass. Anything else (TTA, MC-dropout, an ensemble, training mode, ``max_images`` reached) goes to the inner
    inferer unchanged. Other attributes (``last_spread``) are the inner inferer's.
    """

    def __init__(self, inner: Any, handler: SaliencyHandler) -> None:
        self.inner = inner.inner if isinstance(inner, _OnePassInferer) else inner  # a second run: not wrapped twice
        self.handler = handler

    def __getattr__(self, name: str) -> Any:
        if name in ("inner", "handler"):  # not set yet (a copy being built): no recursion through self.inner
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        handler = self.handler
        handler._record = None
        if network.training or args or kwargs or handler.done or not self.inner.single(network):
            return self.inner(inputs, network, *args, **kwargs)
        self.inner.last_spread = None
        model = unwrap_model(network)
        record = cam_forward(network, inputs, resolve_target_layer(model, handler.method.target_layer))
        handler._record = (int(inputs.shape[0]), record)
        return record.logits.detach()


def _no_flat(flat: Mapping[str, Any], what: str) -> None:
    if flat:
        raise TypeError(f"SaliencyHandler: give {sorted(flat)} inside {what}, not beside it")

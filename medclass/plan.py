"""The self-configured recipe: a fingerprint of the data, and the training settings chosen from it.

In the spirit of nnU-Net's fingerprint and plan, a training setting left at ``auto`` (the bundles' default for
every setting of :data:`PLANNED`) is chosen from the data: :func:`data_fingerprint` describes the training data
cheaply (counts, image size after preprocessing, dimensionality, channels, task, per-label prevalence, read from
the datalist already loaded, no image is opened), and :func:`choose_plan`, a pure function, maps it to settings.
A value given explicitly (``configs/common.yaml`` or the command line, ``--max_epochs 12``) always wins, and the
rules that depend on it (e.g. the learning rate on the batch size) use the explicit value.

:func:`resolve_plan` does both for a bundle workflow; training writes the result to ``models/plan.json`` beside
the model (:meth:`Plan.write`), and the chosen values, not ``auto``, enter the training run's fingerprint (so
``resume`` sees a changed recipe) and the model file. Workflows that do not train resolve ``auto`` without the
data (only the image size is known): the batch size from the memory bound, the width from the model file.

The rules are anchored on the fixed recipe that beat the MedMNIST v2 baselines on this kind of machine (2 CPU
cores; ``benchmarks/quality.py --recipe fixed``): ResNet-18 at width 32, batch 64 (2D) / 32 (3D), AdamW 2e-3,
warm-up + cosine, label smoothing 0.1, 30 epochs. PneumoniaMNIST (4,708 training images of 28^2, stride-1 stem:
784 cells after the stem) took 12 minutes, AdrenalMNIST3D (1,188 volumes of 28^3, stride-2 stem: 2,744 cells) 10
minutes: both about 1e8 "cell-samples" (cells after the stem x images x epochs), the budget
:data:`WORK_BUDGET` below.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medclass.files import atomic_json, read_json
from medclass.networks.spec import STEM_STRIDE, choose_stem, family, normalize_image_size
from medclass.vocab import AUTO, is_auto

logger = logging.getLogger(__name__)

__all__ = ["AUTO", "PLANNED", "PLAN_FILE", "WORK_BUDGET", "Plan", "choose_plan", "data_fingerprint", "is_auto",
           "planned_augment",
           "read_plan", "resolve_plan"]

PLAN_FILE = "plan.json"
#: The settings the plan chooses when they are ``auto``.
PLANNED: tuple[str, ...] = ("max_epochs", "batch_size", "learning_rate", "warmup_epochs", "width", "augment",
                            "label_smoothing", "pos_weight", "early_stop_patience")
#: Cells after the stem x training images x epochs of one default training: about 10-12 minutes on 2 CPU cores
#: for a ResNet-18 at width 32 (PneumoniaMNIST and AdrenalMNIST3D with the fixed recipe, module docstring).
WORK_BUDGET = 1.0e8
MIN_STEPS = 600          # optimizer steps at least (more epochs for small data at large inputs)
EPOCH_RANGE = (1, 100)   # epochs at least / at most
BASE_BATCH = {2: 64, 3: 32}
BATCH_CELLS = 2 ** 18    # batch x cells after the stem at most (activation memory)
BASE_LR = 2e-3           # AdamW at a batch of 32 or more
SMALL_DATA = 500         # fewer training items: half the width
RARE = 0.1               # a label this rare (training prevalence) changes smoothing and pos_weight
AUGMENT = {2: {}, 3: {"rotate_deg": 10, "zoom": 0.1, "translate": 0.05}}


def planned_augment(spatial_dims: Any) -> dict[str, Any]:
    """The augmentation options ``augment: auto`` stands for in ``spatial_dims`` (2 or 3) dimensions."""
    return dict(AUGMENT[3 if str(spatial_dims) == "3" else 2])


def data_fingerprint(data: Any, spatial_dims: int, image_size: Any, in_channels: int = 1,
                     stem: str = AUTO) -> dict[str, Any]:
    """What the plan looks at, from a loaded :class:`medclass.data.Datalist` (or ``None``: no data).

    Args:
        data: the datalist the run trains on (its ``training`` / ``validation`` splits and labels are counted;
            no image is read), or ``None``.
        spatial_dims: 2 or 3.
        image_size: the size every image is resized to (the bundle's ``image_size``), int or one per axis.
        in_channels: image channels.
        stem: the network's stem; ``auto``: the one :func:`medclass.networks.spec.choose_stem` picks.

    Returns:
        ``{"spatial_dims", "image_size", "in_channels", "stem", "cells"}`` (the grid after that stem) and, with
        data, ``"n_training"``, ``"n_validation"``, ``"task"``, ``"num_labels"`` and
        ``"prevalence"`` (``{label: training positives / known}``, ``None`` when no value is known).
    """
    dims = int(spatial_dims)
    size = list(normalize_image_size(image_size, dims))
    stem = choose_stem(size, dims) if is_auto(stem) or stem not in STEM_STRIDE else stem
    fp: dict[str, Any] = {"spatial_dims": dims, "image_size": size, "in_channels": int(in_channels), "stem": stem,
                          "cells": cells_after_stem(size, stem)}
    if data is None:
        return fp
    splits = data.splits
    train = splits.get("training") or splits.get("all") or []
    names = list(data.label_names)
    labels = np.stack([np.asarray(it["label"], dtype=np.float32).reshape(-1) for it in train]) if train else \
        np.zeros((0, len(names)), dtype=np.float32)
    known = (~np.isnan(labels)).sum(0)
    pos = (labels == 1).sum(0)
    fp.update({"n_training": len(train), "n_validation": len(splits.get("validation") or []), "task": data.task,
               "num_labels": len(names),
               "prevalence": {n: (round(float(pos[c]) / float(known[c]), 4) if known[c] else None)
                              for c, n in enumerate(names)}})
    return fp


def cells_after_stem(image_size: Sequence[int], stem: str) -> int:
    """Grid cells after a stem of that stride: the per-image cost unit of the budget."""
    stride = STEM_STRIDE[stem]
    return int(np.prod([max(1, math.ceil(s / stride)) for s in image_size]))


def _pow2_floor(x: float) -> int:
    return 2 ** int(math.floor(math.log2(max(x, 1.0))))


def choose_plan(fp: Mapping[str, Any], given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The training settings for a data fingerprint; a value in ``given`` that is not ``auto`` is kept as is.

    The rules, in order (a later one uses the final value of an earlier one, given or chosen):

    * ``batch_size``: 64 in 2D, 32 in 3D (the fixed recipe's), halved until batch x cells after the stem is at
      most 2^18 (activation memory: 3D 64^3 gets 8, 2D 224^2 keeps 64), and to at most an eighth of the training
      items (at least 8 steps per epoch, so the batch statistics and the schedule see several batches), never
      below 2 (BatchNorm).
    * ``max_epochs``: the budget :data:`WORK_BUDGET` cell-samples divided by (training items x cells), so a
      training costs at most about the same time whatever the set (rounded down: PneumoniaMNIST 27,
      AdrenalMNIST3D 30, ChestMNIST's 78k images 1), raised to at least :data:`MIN_STEPS` optimizer steps (a
      small set at a large input would otherwise stop before it has learnt: a 64^3 volume costs 12x a 28^3 one),
      within 1-100 epochs.
    * ``learning_rate``: 2e-3 (AdamW, fixed recipe) for batches of 32 or more, times sqrt(batch / 32) below (the
      noise of smaller batches), rounded to 2 significant digits.
    * ``warmup_epochs``: a tenth of the epochs, at most 2 (the fixed recipe's 2 of 30).
    * ``width``: 32 (the fixed recipe's: wider or DenseNet models ran 3-4x slower per image, so fewer epochs fit),
      16 below :data:`SMALL_DATA` training items (fewer parameters to fit from little data); null (the
      architecture's own, or the pretrained weights') for a ViT or a pretrained start.
    * ``augment``: the preset's augmentation in 2D (``{}``: rotation, shift, zoom, contrast, flip); in 3D the milder
      set of the fixed recipe (rotate 10 degrees, zoom 0.1, translate 0.05).
    * ``label_smoothing``: 0.1, but 0 for multilabel / binary labels when one's training prevalence is below
      :data:`RARE`: smoothing moves the negatives' BCE target to 0.05, as high as such a label's prevalence.
      Multi-class keeps 0.1 (cross-entropy spreads it over the K classes: 0.1 / K to each wrong one).
    * ``pos_weight``: on when a label (multilabel / binary) is rarer than :data:`RARE` (weights its positives for
      AUC), else off: unweighted BCE keeps probabilities calibrated, so accuracy at 0.5 means something.
    * ``early_stop_patience``: a third of the epochs, at least 3.

    Without data (``n_training`` absent: workflows that do not train) the counts are taken as large: the batch
    size follows the memory bound and the epochs the budget for 10,000 items.

    Args:
        fp: :func:`data_fingerprint`'s result.
        given: the settings' values; those not ``auto`` are kept.

    Returns:
        ``{setting: value}`` for every setting of :data:`PLANNED`.
    """
    given = {k: v for k, v in (given or {}).items() if k in PLANNED and not is_auto(v)}
    dims, cells = int(fp["spatial_dims"]), int(fp["cells"])
    n = fp.get("n_training")
    n_eff = 10_000 if n is None else max(int(n), 1)
    out: dict[str, Any] = {}

    def pick(key: str, rule):
        out[key] = given[key] if key in given else rule()

    def batch():
        b = BASE_BATCH[dims]
        while b > 2 and b * cells > BATCH_CELLS:
            b //= 2
        return max(2, min(b, _pow2_floor(n_eff / 8)))

    pick("batch_size", batch)
    bs = int(out["batch_size"])

    def epochs():
        e = int(WORK_BUDGET // (n_eff * cells))
        e = max(e, math.ceil(MIN_STEPS / max(1, n_eff // bs)))
        return int(min(max(e, EPOCH_RANGE[0]), EPOCH_RANGE[1]))

    pick("max_epochs", epochs)
    ep = int(out["max_epochs"])
    pick("learning_rate", lambda: float(f"{BASE_LR * math.sqrt(min(bs, 32) / 32):.2g}"))
    pick("warmup_epochs", lambda: round(min(2.0, ep / 10), 2))
    arch = str(fp.get("arch") or "resnet18").lower()
    pick("width", lambda: None if family(arch) == "vit" or fp.get("pretrained") else
         (16 if n is not None and n < SMALL_DATA else 32))
    pick("augment", lambda: dict(AUGMENT[dims]))
    prev = [p for p in (fp.get("prevalence") or {}).values() if p is not None]
    rare = bool(prev) and min(prev) < RARE and fp.get("task") != "multiclass"
    pick("label_smoothing", lambda: 0.0 if rare else 0.1)
    pick("pos_weight", lambda: rare)
    pick("early_stop_patience", lambda: max(3, math.ceil(ep / 3)))
    return out


class Plan(dict):
    """The settings of :data:`PLANNED` a run uses (a dict: ``@plan['batch_size']`` in the configs), with
    ``fingerprint`` (the data it was chosen from, with the arch and whether it starts pretrained), ``chosen``
    (what the rules alone chose for every planned setting) and ``explicit`` (the settings given a value rather
    than ``auto``, which win)."""

    def __init__(self, values: Mapping[str, Any], fingerprint: Mapping[str, Any], chosen: Mapping[str, Any],
                 explicit: Sequence[str]) -> None:
        super().__init__(values)
        self.fingerprint = dict(fingerprint)
        self.chosen = dict(chosen)
        self.explicit = sorted(explicit)

    def record(self) -> dict[str, Any]:
        """The plan as ``models/plan.json`` holds it."""
        return {"fingerprint": self.fingerprint, "settings": dict(self), "explicit": self.explicit,
                "chosen": self.chosen, "stem": self.fingerprint.get("stem"),
                "rules": "medclass.plan.choose_plan (explicit settings win)"}

    def write(self, folder: str | os.PathLike, enabled: bool = True) -> Path | None:
        """Write :meth:`record` to ``folder/plan.json`` (not on ranks other than 0: ``enabled`` false)."""
        if not enabled:
            return None
        path = Path(folder) / PLAN_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_json(path, self.record())
        logger.info("recipe (%s; explicit: %s): %s", path, ", ".join(self.explicit) or "none",
                    ", ".join(f"{k}={v!r}" for k, v in self.items()))
        return path


def resolve_plan(settings: Mapping[str, Any], data: Any = None, model: Mapping[str, Any] | None = None) -> Plan:
    """The planned settings of a workflow: each ``auto`` one chosen from the data, the others as given.

    Args:
        settings: the workflow's settings (``spatial_dims``, ``image_size``, ``in_channels``, ``arch``,
            ``pretrained`` and the settings of :data:`PLANNED`, ``auto`` or a value).
        data: the training datalist (training), or ``None`` (workflows that do not train).
        model: the model settings (:func:`medclass.networks.model_settings`) of a workflow that loads a model
            file: a model-defining setting given as ``auto`` (``--width auto``) is the file's value, the plan's
            choice when the model was trained.

    Raises:
        ValueError: ``spatial_dims`` / ``image_size`` that do not describe an image, naming the setting.
    """
    try:
        normalize_image_size(settings["image_size"], int(settings["spatial_dims"]))
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"setting image_size / spatial_dims: cannot plan the recipe for "
                         f"{settings.get('image_size')!r} in {settings.get('spatial_dims')!r}D ({err})") from None
    fp = data_fingerprint(data, settings["spatial_dims"], settings["image_size"], settings.get("in_channels") or 1,
                          settings.get("stem") or AUTO)
    pretrained = settings.get("pretrained")
    fp_rules = {**fp, "arch": settings.get("arch"),
                "pretrained": bool(pretrained) and str(pretrained).strip().lower() not in ("none", "null")}
    given = {k: settings[k] for k in PLANNED if k in settings}
    if model and model.get("model_file"):
        given.update({k: model[k] for k, v in given.items() if is_auto(v) and k in model
                      and k not in model.get("missing", ())})
    explicit = [k for k in PLANNED if k in given and not is_auto(given[k])]
    return Plan(choose_plan(fp_rules, given), fp_rules, choose_plan(fp_rules), explicit)


def read_plan(folder: str | os.PathLike) -> dict[str, Any] | None:
    """``folder/plan.json`` as written by training, or ``None`` when there is none.

    Raises:
        ValueError: the file is not valid JSON (naming it).
    """
    return read_json(Path(folder) / PLAN_FILE)

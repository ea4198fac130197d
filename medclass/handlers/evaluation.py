"""The evaluate workflow's handlers: operating points (and temperature) chosen on the validation split and
stored with the model, then the full evaluation of the test split (metrics, per-label CSV, report)."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from medclass.data import label_matrix
from medclass.files import atomic_json, atomic_save, atomic_text, atomic_write
from medclass.handlers.predictions import batch_ids, output_rows
from medclass.metrics import (
    MIN_POSITIVES,
    choose_thresholds,
    fit_temperature,
    operating_point_specs,
    probabilities,
    to_json,
)
from medclass.networks import Classifier
from medclass.report import annotate_predictions, build_report, check_subgroups
from medclass.report.card import DATA_FILE, MODEL_FILE, data_summary, model_summary, read_model, write_model_card
from medclass.report.external import prepare_external
from medclass.report.shortcuts import write_shortcuts
from medclass.vocab import flag, resolve_thresholds, unwrap_model

logger = logging.getLogger(__name__)

THRESHOLDS_FILE = "thresholds.json"


def _atomic_text(path: Path, text: str) -> None:
    atomic_text(path, text)


#: key of the threshold provenance in the classifier's ``_extra_state`` metadata
PROVENANCE_KEY = "operating_points"


def _encode_metadata(meta: Mapping[str, Any]) -> torch.Tensor:
    """JSON metadata as a 1-D uint8 tensor: the classifier's ``_extra_state`` format (it decodes with
    :meth:`medclass.networks.Classifier.decode_extra_state` and survives ``weights_only`` loading)."""
    return torch.tensor(list(json.dumps(to_json(dict(meta)), sort_keys=True).encode("utf-8")), dtype=torch.uint8)


def stored_provenance(model_path: str | os.PathLike) -> dict[str, Any] | None:
    """How the thresholds stored in ``model_path`` were chosen (``None`` when the checkpoint does not say).

    Returns:
        ``{"split", "operating_point", "min_positives", "labels": {label: {"chosen_by", "method", "fallback",
        "threshold"}}}`` as :func:`store_operating_point` wrote it.
    """
    state = torch.load(Path(model_path), map_location="cpu", weights_only=True)
    extra = state.get("_extra_state") if isinstance(state, dict) else None
    if extra is None:
        return None
    return Classifier.decode_extra_state(extra).get(PROVENANCE_KEY)


def store_operating_point(model_path: str | os.PathLike, thresholds: Sequence[float], temperature: float,
                          provenance: Mapping[str, Any] | None = None) -> None:
    """Write thresholds and temperature into a ``state_dict`` checkpoint (``model.pt``) in place.

    The file stays a plain state_dict that loads with ``torch.load(..., weights_only=True)``. With
    ``provenance`` (how each threshold was chosen: on validation, by the fallback, fixed or kept), it is stored
    beside the thresholds under ``operating_points`` in the model's ``_extra_state`` metadata, which loading
    ignores, so a model file always says whether its thresholds rest on enough validation cases.
    """
    path = Path(model_path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: model checkpoint to store the operating points in does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "thresholds" not in state:
        raise ValueError(f"{path}: not a medclass classifier state_dict (no 'thresholds' entry)")
    old = state["thresholds"]
    if old.numel() != len(thresholds):
        raise ValueError(f"{path}: holds {old.numel()} thresholds, {len(thresholds)} were chosen")
    state["thresholds"] = torch.as_tensor(list(thresholds), dtype=old.dtype)
    state["temperature"] = torch.tensor([float(temperature)], dtype=torch.float32)
    if provenance is not None and "_extra_state" in state:
        meta = dict(Classifier.decode_extra_state(state["_extra_state"]))
        meta[PROVENANCE_KEY] = dict(provenance)
        state["_extra_state"] = _encode_metadata(meta)
    atomic_save(state, path)


def _prevalence(items: Sequence[Mapping], n_labels: int) -> list[float]:
    """Per-label prevalence among the items with a known value (``nan`` where none is known)."""
    y = label_matrix(list(items), num_labels=n_labels) if items else np.full((0, n_labels), np.nan)
    known = (~np.isnan(y)).sum(axis=0)
    pos = (y == 1).sum(axis=0)
    return [float(p / k) if k else math.nan for p, k in zip(pos, known)]


class OperatingPointSelector:
    """Chooses per-label decision thresholds (and optionally a temperature) on the validation split.

    Attach it to an evaluator that runs the validation split with *no* post-processing (``pred`` holds raw
    logits). When that run completes it

    1. fits the temperature (``temperature_scaling``) by minimising the validation negative log-likelihood;
    2. chooses each label's threshold on the (temperature-scaled) validation probabilities;
    3. sets both on the network (``thresholds`` and ``temperature`` buffers), writes them into ``model_path``
       (so ``inference`` uses them), and writes ``thresholds.json`` (method, threshold, validation sensitivity
       and specificity per label, temperature) into ``ckpt_dir`` and ``output_dir``, with the validation
       probabilities in ``output_dir/validation_predictions.csv``.

    Args:
        network: the model.
        label_names: label order.
        task: ``multilabel``, ``binary`` or ``multiclass`` (multi-class decisions are the arg-max: only the
            temperature is fitted).
        operating_point: ``youden``, ``sensitivity:<x>``, ``specificity:<x>``, a fixed threshold, a list (one
            per label) or ``{label: any of those}``; ``None`` keeps the thresholds stored with the model.
        temperature_scaling: fit the temperature (otherwise 1.0, no scaling).
        model_path: checkpoint to update; ``None``: do not store.
        ckpt_dir: folder for ``thresholds.json`` next to the model; ``None``: not written there.
        output_dir: the evaluation folder.
        split: name of the split the evaluator runs (refused when it is ``test``).
        enabled: ``False`` on ranks other than 0 for the file writing (the buffers are set everywhere).
        min_positives: positives and negatives a label needs in the validation split for its threshold to be
            chosen there; fewer: the fallback of :func:`medclass.metrics.fallback_threshold` (flagged in
            ``thresholds.json``, in the model file and in the evaluation outputs).
        training_items: the training datalist items; their label prevalence sets the fallback threshold
            (``None``: the fallback is 0.5).
    """

    def __init__(
        self,
        network: torch.nn.Module,
        label_names: Sequence[str],
        task: str = "multilabel",
        operating_point: Any = "youden",
        temperature_scaling: bool = False,
        model_path: str | os.PathLike | None = None,
        ckpt_dir: str | os.PathLike | None = None,
        output_dir: str | os.PathLike | None = None,
        split: str = "validation",
        enabled: bool = True,
        min_positives: int = MIN_POSITIVES,
        training_items: Sequence[Mapping] | None = None,
    ) -> None:
        if str(split) == "test":
            raise ValueError("operating points are chosen on the validation split, never on 'test': "
                             "set calibration_split to 'validation'")
        self.network = network
        self.label_names = [str(n) for n in label_names]
        self.task = task
        self.operating_point = None if operating_point in (None, "", "null", "none", "keep") else operating_point
        if self.operating_point is not None:
            operating_point_specs(self.operating_point, self.label_names)  # fail early on a bad spec
        self.temperature_scaling = flag(temperature_scaling, "temperature_scaling")
        self.model_path = Path(model_path) if model_path else None
        self.ckpt_dir = Path(ckpt_dir) if ckpt_dir else None
        self.output_dir = Path(output_dir) if output_dir else None
        self.split = str(split)
        self.enabled = flag(enabled, "enabled")
        self.min_positives = int(min_positives)
        if self.min_positives < 1:
            raise ValueError(f"min_positives must be >= 1, got {min_positives}")
        self.prevalence = _prevalence(training_items, len(self.label_names)) \
            if training_items is not None and task != "multiclass" else None
        self.result: dict[str, Any] | None = None
        self._logits: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._ids: list[str] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.COMPLETED, self._complete)

    def _start(self, engine: Engine) -> None:
        self._logits, self._labels, self._ids = [], [], []

    def _iteration(self, engine: Engine) -> None:
        preds, labels = output_rows(engine, "pred"), output_rows(engine, "label")
        if not preds:
            return
        if any(lbl is None for lbl in labels):
            raise ValueError(f"the {self.split} split has images without labels: operating points need labels")
        self._ids += batch_ids(engine, "id", len(preds), len(self._ids))
        self._logits.append(np.stack([torch.as_tensor(p).detach().float().cpu().reshape(-1).numpy() for p in preds]))
        self._labels.append(np.stack([torch.as_tensor(v).detach().float().cpu().reshape(-1).numpy() for v in labels]))

    def _complete(self, engine: Engine) -> None:
        if not self._logits:
            raise ValueError(f"the {self.split} split is empty: no data to choose operating points on")
        net = unwrap_model(self.network)
        logits, labels = np.concatenate(self._logits), np.concatenate(self._labels)
        if logits.shape[1] != len(self.label_names):
            raise ValueError(f"the model returns {logits.shape[1]} outputs for {len(self.label_names)} labels")
        temperature = fit_temperature(logits, labels, self.task) if self.temperature_scaling else 1.0
        probs = probabilities(logits, self.task, temperature)
        stored = resolve_thresholds(None, net, self.label_names)
        if self.task == "multiclass":
            chosen = [{"label": n, "method": "argmax", "threshold": None} for n in self.label_names]
            thresholds = stored
        elif self.operating_point is None:
            chosen = choose_thresholds(labels, probs, self.label_names, [float(t) for t in stored])
            kept = stored_provenance(self.model_path) if self.model_path is not None and \
                self.model_path.exists() else None
            for c in chosen:
                before = ((kept or {}).get("labels") or {}).get(c["label"]) or {}
                c.update(method="stored", chosen_by="stored", fallback=before.get("fallback"),
                         stored_chosen_by=before.get("chosen_by"))
            thresholds = stored
        else:
            chosen = choose_thresholds(labels, probs, self.label_names, self.operating_point,
                                       min_positives=self.min_positives, prevalence=self.prevalence)
            thresholds = np.array([c["threshold"] for c in chosen])
        for c in chosen:
            if c.get("fallback") and c.get("chosen_by") == "fallback":
                logger.warning("label %s: %s", c["label"], c["fallback"])
        if hasattr(net, "set_thresholds"):
            net.set_thresholds([float(t) for t in thresholds])
        if hasattr(net, "set_temperature"):
            net.set_temperature(temperature)
        self.result = {
            "split": self.split,
            "n": int(len(labels)),
            "task": self.task,
            "operating_point": self.operating_point if self.operating_point is not None else "stored",
            "temperature_scaling": self.temperature_scaling,
            "temperature": float(temperature),
            "min_positives": self.min_positives,
            "training_prevalence": None if self.prevalence is None else dict(zip(self.label_names, self.prevalence)),
            "fallbacks": [c["label"] for c in chosen if c.get("chosen_by") == "fallback"],
            # the test-time averaging the thresholds were chosen with; inference's `tta: auto` reads it back
            "tta": str(getattr(getattr(engine, "inferer", None), "tta", "none")),
            "mc_dropout": int(getattr(getattr(engine, "inferer", None), "mc_dropout", 0)),
            "labels": chosen,
        }
        logger.info("operating points on the %s split (T=%.3f): %s", self.split, temperature,
                    ", ".join(f"{c['label']}={c['threshold']:.4f}" for c in chosen if c["threshold"] is not None))
        if not self.enabled:
            return
        text = json.dumps(to_json(self.result), indent=2)
        if self.model_path is not None:
            provenance = {"split": self.split, "operating_point": self.result["operating_point"],
                          "min_positives": self.min_positives, "tta": self.result["tta"],
                          "mc_dropout": self.result["mc_dropout"],
                          "labels": {c["label"]: {k: c.get(k) for k in ("chosen_by", "method", "target", "fallback",
                                                                         "threshold", "positives", "negatives")}
                                     for c in chosen}}
            store_operating_point(self.model_path, [float(t) for t in thresholds], temperature, provenance)
            logger.info("thresholds and temperature stored in %s", self.model_path)
        if self.ckpt_dir is not None:
            _atomic_text(self.ckpt_dir / THRESHOLDS_FILE, text)
        if self.output_dir is not None:
            _atomic_text(self.output_dir / THRESHOLDS_FILE, text)
            self._write_predictions(self.output_dir / "validation_predictions.csv", probs, labels)

    def _write_predictions(self, path: Path, probs: np.ndarray, labels: np.ndarray) -> None:
        with atomic_write(path, newline="") as f:
            w = csv.writer(f)
            w.writerow(["id"] + [f"prob_{n}" for n in self.label_names] + [f"label_{n}" for n in self.label_names])
            for i, p, y in zip(self._ids, probs, labels):
                w.writerow([i] + [f"{v:.6f}" for v in p] + ["" if math.isnan(v) else int(v) for v in y])


class EvaluationWriter:
    """Writes the evaluation of the run's ``predictions.csv`` when the evaluator completes.

    Attach it after :class:`medclass.handlers.PredictionWriter`. It adds a pseudonymous ``patient`` column
    (``P0001``..., for the patient-level bootstrap) and ``group_<column>`` subgroup columns to the predictions,
    then writes ``metrics.json``, ``per_label.csv``, ``report.html`` and ``plots/*.png`` (see
    :func:`medclass.report.build_report`).

    Args:
        output_dir: the evaluation folder (holding ``predictions.csv``).
        items: the evaluated datalist items (``id``, ``patient_id`` and any CSV columns).
        task: ``multilabel``, ``binary`` or ``multiclass``.
        subgroups: datalist columns to break the results down by: names, or ``{"column": name, "bins": [...]}``
            for numeric columns (e.g. age bands).
        n_bootstrap: bootstrap resamples for the 95% intervals.
        seed: bootstrap seed.
        n_bins: reliability-diagram bins.
        saliency_max: most saliency images embedded in the report.
        report: write the HTML report and the plots.
        enabled: ``False`` on ranks other than 0.
        min_positives: test positives and negatives a label needs to enter the headline mean AUC.
        external: external validation (the ``external.yaml`` workflow): ``{"thresholds_file": the model's
            thresholds.json (chosen on the internal validation split; copied, never re-chosen), "model_path":
            the model (its stored thresholds must match that file), "internal_dir": the internal evaluation
            folder to compare with, "training_items": the training items (data-shift reference), "source": a
            description of the external data, "max_images": images read per set for the shift summary}``.
        preprocessing: the evaluation preprocessing; with it, 2D saliency maps under ``saliency/`` are checked
            for shortcuts (share of each map on the image border and on burned-in text, see
            :mod:`medclass.report.shortcuts`).
        model_path: the evaluated model file: its description goes to ``model.json`` and, with ``report``, the
            model card (``model_card.md`` / ``.html`` / ``.json``, :mod:`medclass.report.card`) is written.
        splits: the development data's splits (``{split: items}``): their counts, patients and label prevalences
            (aggregates only) go to ``data.json``, for the card and the report's "Model and data" section.
        label_names: the label order, for ``data.json``.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        items: Sequence[Mapping] | None = None,
        task: str = "multilabel",
        subgroups: Sequence[Any] | None = None,
        n_bootstrap: int = 1000,
        seed: int = 0,
        n_bins: int = 10,
        saliency_max: int = 24,
        report: bool = True,
        enabled: bool = True,
        min_positives: int = MIN_POSITIVES,
        external: Mapping[str, Any] | None = None,
        preprocessing: Any = None,
        model_path: str | os.PathLike | None = None,
        splits: Mapping[str, Sequence[Mapping]] | None = None,
        label_names: Sequence[str] | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.model_path = Path(model_path) if model_path else None
        self.splits = splits
        self.label_names = list(label_names) if label_names is not None else None
        self.min_positives = int(min_positives)
        self.external = dict(external) if external else None
        self.preprocessing = preprocessing
        self.items = list(items) if items is not None else None
        self.task = task
        self.subgroups = list(subgroups or [])
        self.n_bootstrap = int(n_bootstrap)
        self.seed = int(seed)
        self.n_bins = int(n_bins)
        self.saliency_max = int(saliency_max)
        self.report = flag(report, "report")
        self.enabled = flag(enabled, "enabled")
        self.metrics: dict[str, Any] | None = None
        if self.items is not None:
            check_subgroups(self.items, self.subgroups)  # a wrong column stops before any inference

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._last_on_completion)

    def _last_on_completion(self, engine: Engine) -> None:
        # (re-)register when the run starts, i.e. after every handler of the config was attached: the report then
        # sees the files the other handlers write on completion (predictions, saliency maps)
        if engine.has_event_handler(self._complete, Events.COMPLETED):
            engine.remove_event_handler(self._complete, Events.COMPLETED)
        engine.add_event_handler(Events.COMPLETED, self._complete)

    def _complete(self, engine: Engine) -> None:
        if not self.enabled:
            return
        if self.items is not None:
            annotate_predictions(self.output_dir / "predictions.csv", self.items, self.subgroups)
        if self.external is not None:
            prepare_external(self.output_dir, self.items or [], **self.external)
        if self.preprocessing is not None and self.items is not None:
            write_shortcuts(self.output_dir, self.items, self.preprocessing)
        if self.model_path is not None and self.model_path.is_file():
            atomic_json(self.output_dir / MODEL_FILE, to_json(model_summary(read_model(self.model_path))),
                        allow_nan=False)
        if self.splits and self.label_names:
            atomic_json(self.output_dir / DATA_FILE, to_json(data_summary(self.splits, self.label_names)),
                        allow_nan=False)
        self.metrics = build_report(self.output_dir, task=self.task, subgroups=self.subgroups,
                                    n_bootstrap=self.n_bootstrap, seed=self.seed, n_bins=self.n_bins,
                                    saliency_max=self.saliency_max, html=self.report,
                                    min_positives=self.min_positives)
        if self.report and self.model_path is not None and self.model_path.is_file():
            write_model_card(self.model_path, self.output_dir)
        details = getattr(engine.state, "metric_details", None)  # MONAI engines have it, plain ignite ones not
        if isinstance(details, dict):
            details["summary"] = self.metrics

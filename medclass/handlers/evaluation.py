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

from medclass.files import atomic_save, atomic_text, atomic_write
from medclass.handlers.predictions import _ids, _rows
from medclass.metrics import choose_thresholds, fit_temperature, probabilities, to_json
from medclass.utils import flag

logger = logging.getLogger(__name__)

THRESHOLDS_FILE = "thresholds.json"


def _unwrap(network: torch.nn.Module) -> torch.nn.Module:
    return network.module if hasattr(network, "module") else network


def _atomic_text(path: Path, text: str) -> None:
    atomic_text(path, text)


def store_operating_point(model_path: str | os.PathLike, thresholds: Sequence[float], temperature: float) -> None:
    """Write thresholds and temperature into a ``state_dict`` checkpoint (``model.pt``) in place.

    The file stays a plain state_dict that loads with ``torch.load(..., weights_only=True)``.
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
    atomic_save(state, path)


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
    ) -> None:
        if str(split) == "test":
            raise ValueError("operating points are chosen on the validation split, never on 'test': "
                             "set calibration_split to 'validation'")
        self.network = network
        self.label_names = [str(n) for n in label_names]
        self.task = task
        self.operating_point = None if operating_point in (None, "", "null", "none", "keep") else operating_point
        if self.operating_point is not None:
            from medclass.metrics import operating_point_specs

            operating_point_specs(self.operating_point, self.label_names)  # fail early on a bad spec
        self.temperature_scaling = flag(temperature_scaling, "temperature_scaling")
        self.model_path = Path(model_path) if model_path else None
        self.ckpt_dir = Path(ckpt_dir) if ckpt_dir else None
        self.output_dir = Path(output_dir) if output_dir else None
        self.split = str(split)
        self.enabled = flag(enabled, "enabled")
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
        preds, labels = _rows(engine, "pred"), _rows(engine, "label")
        if not preds:
            return
        if any(lbl is None for lbl in labels):
            raise ValueError(f"the {self.split} split has images without labels: operating points need labels")
        self._ids += _ids(engine, "id", len(preds), len(self._ids))
        self._logits.append(np.stack([torch.as_tensor(p).detach().float().cpu().reshape(-1).numpy() for p in preds]))
        self._labels.append(np.stack([torch.as_tensor(v).detach().float().cpu().reshape(-1).numpy() for v in labels]))

    def _complete(self, engine: Engine) -> None:
        if not self._logits:
            raise ValueError(f"the {self.split} split is empty: no data to choose operating points on")
        net = _unwrap(self.network)
        logits, labels = np.concatenate(self._logits), np.concatenate(self._labels)
        if logits.shape[1] != len(self.label_names):
            raise ValueError(f"the model returns {logits.shape[1]} outputs for {len(self.label_names)} labels")
        temperature = fit_temperature(logits, labels, self.task) if self.temperature_scaling else 1.0
        probs = probabilities(logits, self.task, temperature)
        stored = net.thresholds.detach().cpu().double().numpy() if hasattr(net, "thresholds") else \
            np.full(len(self.label_names), 0.5)
        if self.task == "multiclass":
            chosen = [{"label": n, "method": "argmax", "threshold": None} for n in self.label_names]
            thresholds = stored
        elif self.operating_point is None:
            chosen = choose_thresholds(labels, probs, self.label_names, [float(t) for t in stored])
            for c in chosen:
                c["method"] = "stored"
            thresholds = stored
        else:
            chosen = choose_thresholds(labels, probs, self.label_names, self.operating_point)
            thresholds = np.array([c["threshold"] for c in chosen])
        for c in chosen:
            if c.get("undefined"):
                logger.warning("label %s: %s", c["label"], c["undefined"])
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
            "labels": chosen,
        }
        logger.info("operating points on the %s split (T=%.3f): %s", self.split, temperature,
                    ", ".join(f"{c['label']}={c['threshold']:.4f}" for c in chosen if c["threshold"] is not None))
        if not self.enabled:
            return
        text = json.dumps(to_json(self.result), indent=2)
        if self.model_path is not None:
            store_operating_point(self.model_path, [float(t) for t in thresholds], temperature)
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
    ) -> None:
        self.output_dir = Path(output_dir)
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
            from medclass.report import check_subgroups

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
        from medclass.report import annotate_predictions, build_report

        if self.items is not None:
            annotate_predictions(self.output_dir / "predictions.csv", self.items, self.subgroups)
        self.metrics = build_report(self.output_dir, task=self.task, subgroups=self.subgroups,
                                    n_bootstrap=self.n_bootstrap, seed=self.seed, n_bins=self.n_bins,
                                    saliency_max=self.saliency_max, html=self.report)
        details = getattr(engine.state, "metric_details", None)  # MONAI engines have it, plain ignite ones not
        if isinstance(details, dict):
            details["summary"] = self.metrics

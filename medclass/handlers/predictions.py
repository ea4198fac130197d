"""Write per-image probabilities and decisions (and, with labels, a metrics summary) from an evaluator."""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from medclass.files import AtomicStream, atomic_json
from medclass.metrics import decisions, summarize
from medclass.vocab import DEFAULT_THRESHOLD, resolve_thresholds

logger = logging.getLogger(__name__)


def output_rows(engine: Engine, key: str) -> list:
    """Per-sample values of ``key`` from the (decollated or batched) engine output/batch."""
    out = engine.state.output
    if isinstance(out, dict):
        out = [dict(zip(out, t)) for t in zip(*out.values())] if key in out else []
    return [o.get(key) if isinstance(o, dict) else None for o in out]


def batch_ids(engine: Engine, id_key: str, n: int, offset: int) -> list[str]:
    """The ids of the batch's ``n`` items (``item_000123`` numbering, from ``offset``, where any is missing)."""
    batch = engine.state.batch
    ids: list[Any] = []
    if isinstance(batch, dict):
        ids = list(batch.get(id_key, []))
    elif isinstance(batch, (list, tuple)):
        ids = [b.get(id_key) if isinstance(b, dict) else None for b in batch]
    ids = [str(i) if i is not None else None for i in ids]
    if len(ids) != n or any(i is None for i in ids):
        return [f"item_{offset + k:06d}" for k in range(n)]
    return ids


class PredictionWriter:
    """Writes ``predictions.csv`` (one row per image) through a temporary file in the same folder that replaces
    it only when the run completes: a run that fails leaves the previous ``predictions.csv`` as it was.

    Columns: ``id``, ``prob_<label>`` per label, ``pred_<label>`` (0/1 decision at the thresholds stored with
    the model) per label, and ``label_<label>`` when the data has labels. For multi-class tasks the decision is
    the one-hot arg-max. With ``metrics_filename``, it also writes a JSON summary (mean and per-label AUC,
    accuracy, counts) when the run completes.

    Args:
        output_dir: folder for the files (created).
        label_names: label order of the model output.
        network: the model; its ``thresholds`` buffer (read when the run starts, after checkpoint loading) sets
            the decision thresholds.
        thresholds: explicit thresholds overriding the network's (float or one per label).
        task: ``multilabel``, ``binary`` or ``multiclass``.
        filename: CSV file name.
        metrics_filename: JSON summary file name, or ``None``.
        id_key: the datalist key holding the image id.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        label_names: Sequence[str],
        network: torch.nn.Module | None = None,
        thresholds: float | Sequence[float] | None = None,
        task: str = "multilabel",
        filename: str = "predictions.csv",
        metrics_filename: str | None = None,
        id_key: str = "id",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.label_names = [str(n) for n in label_names]
        self.network = network
        self.explicit_thresholds = thresholds
        self.task = task
        self.filename = filename
        self.metrics_filename = metrics_filename
        self.id_key = id_key
        self.path = self.output_dir / filename
        self._out = AtomicStream(self.path, "the predictions", newline="")
        self._file = None
        self._writer = None
        self._probs: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._has_labels: bool | None = None
        self.thresholds = np.full(len(self.label_names), DEFAULT_THRESHOLD)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.COMPLETED, self._complete)

    def _start(self, engine: Engine) -> None:
        stored = list(getattr(self.network, "label_names", None) or [])
        if stored and stored != self.label_names:
            raise ValueError(f"the loaded model was trained for labels {stored}, but the config names {self.label_names}")
        self.thresholds = resolve_thresholds(self.explicit_thresholds, self.network, self.label_names)
        self._probs, self._labels, self._has_labels = [], [], None
        self._file = self._out.open()  # the rows go to a temporary file, removed by the next run if this one dies
        self._writer = None

    def _header(self, with_labels: bool) -> list[str]:
        cols = ["id"] + [f"prob_{n}" for n in self.label_names] + [f"pred_{n}" for n in self.label_names]
        if with_labels:
            cols += [f"label_{n}" for n in self.label_names]
        return cols

    def _iteration(self, engine: Engine) -> None:
        preds = output_rows(engine, "pred")
        if not preds:
            return
        labels = output_rows(engine, "label")
        probs = np.stack([np.asarray(torch.as_tensor(p).detach().float().cpu()).reshape(-1) for p in preds])
        if probs.shape[1] != len(self.label_names):
            raise ValueError(
                f"the model returns {probs.shape[1]} outputs but {len(self.label_names)} label names were given"
            )
        if self._has_labels is None:
            self._has_labels = all(lbl is not None for lbl in labels)
            self._writer = csv.writer(self._file)
            try:
                self._writer.writerow(self._header(self._has_labels))
            except OSError as exc:
                self._out.failed(exc)
        ids = batch_ids(engine, self.id_key, len(probs), sum(len(p) for p in self._probs))
        dec = decisions(probs, self.thresholds, self.task)
        lab = None
        if self._has_labels:
            lab = np.stack([np.asarray(torch.as_tensor(v).float().cpu()).reshape(-1) for v in labels])
            self._labels.append(lab)
        self._probs.append(probs)
        try:
            for k, image_id in enumerate(ids):
                row = [image_id] + [f"{v:.6f}" for v in probs[k]] + [int(v) for v in dec[k]]
                if lab is not None:
                    row += ["" if math.isnan(v) else int(v) for v in lab[k]]
                self._writer.writerow(row)
            self._file.flush()
        except OSError as exc:
            self._out.failed(exc)

    def _complete(self, engine: Engine) -> None:
        self._out.commit()
        self._file = None
        logger.info("predictions written to %s", self.path)
        if self.metrics_filename and self._has_labels and self._probs:
            summary = summarize(
                np.concatenate(self._labels), np.concatenate(self._probs), self.label_names, self.thresholds, self.task
            )
            summary["thresholds"] = {n: float(t) for n, t in zip(self.label_names, self.thresholds)}
            path = self.output_dir / self.metrics_filename
            atomic_json(path, summary)
            logger.info("metrics written to %s (mean AUC %s)", path, summary["mean_auc"])
            engine.state.metric_details["summary"] = summary

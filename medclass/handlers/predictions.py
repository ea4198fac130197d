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

from medclass.engines import UNCERTAINTY
from medclass.files import AtomicStream, atomic_json
from medclass.metrics import decisions, summarize
from medclass.transforms.readers.base import DICOM_UID_KEYS
from medclass.vocab import DEFAULT_THRESHOLD, resolve_thresholds

logger = logging.getLogger(__name__)

#: the DICOM columns of ``predictions.csv`` (the image's own UIDs, which join results back to PACS; empty for
#: other sources, and the SOP instance for a series of files), in file order, with their image metadata keys
UID_COLUMNS = {keyword: key for key, keyword in DICOM_UID_KEYS.items()}


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


def batch_meta(engine: Engine, image_key: str, meta_key: str, n: int) -> list[str]:
    """``meta_key`` of the image metadata of the batch's ``n`` items (``""`` where an item has none): works on
    the collated batch (a :class:`monai.data.MetaTensor` whose metadata holds one value per item) and on a
    decollated one (a list of items)."""
    batch = engine.state.batch
    values: list[Any] = []
    if isinstance(batch, dict):
        meta = getattr(batch.get(image_key), "meta", None) or {}
        v = meta.get(meta_key)
        values = [v] if isinstance(v, str) else list(v or [])
    elif isinstance(batch, (list, tuple)):
        for b in batch:
            meta = (getattr(b.get(image_key), "meta", None) or {}) if isinstance(b, dict) else {}
            values.append(meta.get(meta_key))
    if len(values) != n:
        return [""] * n
    return [v if isinstance(v, str) else "" for v in values]


class PredictionWriter:
    """Writes ``predictions.csv`` (one row per image) through a temporary file in the same folder that replaces
    it only when the run completes: a run that fails leaves the previous ``predictions.csv`` as it was.

    Columns: ``id``; ``StudyInstanceUID``, ``SeriesInstanceUID``, ``SOPInstanceUID`` (of DICOM inputs, read by
    the image readers; empty for other sources, and the SOP instance of a series of files: never a patient name or
    ID); per label ``prob_<label>`` (probability), ``threshold_<label>`` (the threshold stored with the model) and
    ``pred_<label>`` (the 0/1 decision, ``probability >= threshold``); ``uncertainty_<label>`` where the inferer
    averages several predictions (ensemble members, TTA views, MC-dropout samples: the standard deviation of their
    probabilities, :class:`medclass.inferers.PredictionInferer`); and ``label_<label>`` when the data has labels.
    For multi-class tasks the decision is the one-hot arg-max and the threshold cells are empty. With
    ``metrics_filename``, it also writes a JSON summary (mean and per-label AUC, accuracy, counts) when the run
    completes.

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
        image_key: the batch key holding the image (whose metadata carries the DICOM UIDs).
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
        image_key: str = "image",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.label_names = [str(n) for n in label_names]
        self.network = network
        self.explicit_thresholds = thresholds
        self.task = task
        self.filename = filename
        self.metrics_filename = metrics_filename
        self.id_key = id_key
        self.image_key = image_key
        self.path = self.output_dir / filename
        self._out = AtomicStream(self.path, "the predictions", newline="")
        self._file = None
        self._writer = None
        self._probs: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._has_labels: bool | None = None
        self._has_uncertainty = False
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
        cols = ["id", *UID_COLUMNS] + [f"prob_{n}" for n in self.label_names]
        cols += [f"threshold_{n}" for n in self.label_names] + [f"pred_{n}" for n in self.label_names]
        if self._has_uncertainty:
            cols += [f"uncertainty_{n}" for n in self.label_names]
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
        spread = output_rows(engine, UNCERTAINTY)
        if self._has_labels is None:
            self._has_labels = all(lbl is not None for lbl in labels)
            self._has_uncertainty = bool(spread) and all(u is not None for u in spread)
            self._writer = csv.writer(self._file)
            try:
                self._writer.writerow(self._header(self._has_labels))
            except OSError as exc:
                self._out.failed(exc)
        ids = batch_ids(engine, self.id_key, len(probs), sum(len(p) for p in self._probs))
        # the decision is made on the values as written, so every row of the file satisfies
        # pred == (prob >= threshold) exactly, whoever reads it
        prob_cells = [[f"{v:.6f}" for v in row] for row in probs]
        thr = [""] * len(self.label_names) if self.task == "multiclass" else [f"{t:.6f}" for t in self.thresholds]
        if self.task == "multiclass":
            dec = decisions(probs, self.thresholds, self.task)
        else:
            dec = decisions(np.array([[float(c) for c in row] for row in prob_cells]),
                            np.array([float(c) for c in thr]), self.task)
        uids = [batch_meta(engine, self.image_key, key, len(probs)) for key in UID_COLUMNS.values()]
        lab = None
        if self._has_labels:
            lab = np.stack([np.asarray(torch.as_tensor(v).float().cpu()).reshape(-1) for v in labels])
            self._labels.append(lab)
        self._probs.append(probs)
        unc = None
        if self._has_uncertainty:
            if len(spread) != len(probs) or any(u is None for u in spread):
                raise ValueError("the inferer gave an uncertainty for some batches only")
            unc = np.stack([np.asarray(torch.as_tensor(u).detach().float().cpu()).reshape(-1) for u in spread])
        try:
            for k, image_id in enumerate(ids):
                row = [image_id, *(u[k] for u in uids)] + prob_cells[k] + thr
                row += [int(v) for v in dec[k]]
                if unc is not None:
                    row += [f"{v:.6f}" for v in unc[k]]
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

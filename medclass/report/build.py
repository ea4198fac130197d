"""Building an evaluation folder's report: read ``predictions.csv`` (and ``thresholds.json``, ``external.json``,
``saliency/shortcuts.json``), compute every figure, write ``metrics.json``, ``per_label.csv`` and the HTML page."""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medclass.files import atomic_json, atomic_write, read_json
from medclass.metrics import MIN_POSITIVES, evaluate_predictions, group_values, to_json
from medclass.report.external import EXTERNAL_FILE, external_comparison
from medclass.report.html import write_html
from medclass.report.referral import REFERRAL_FILE, referral_summary, write_referral_csv
from medclass.report.shortcuts import SHORTCUTS_FILE
from medclass.vocab import TASKS

logger = logging.getLogger(__name__)

__all__ = ["PER_LABEL_COLUMNS", "annotate_predictions", "build_report", "check_subgroups", "read_predictions",
           "subgroup_specs"]



def subgroup_specs(subgroups: Sequence[Any] | None) -> list[tuple[str, list[float] | None]]:
    """``[(column, bins or None)]`` from names or ``{"column": name, "bins": [edges]}`` entries."""
    out = []
    for s in subgroups or []:
        if isinstance(s, str):
            out.append((s, None))
        elif isinstance(s, Mapping) and "column" in s:
            bins = s.get("bins")
            out.append((str(s["column"]), [float(b) for b in bins] if bins is not None else None))
        else:
            raise ValueError(f"subgroup {s!r}: give a column name or {{column: name, bins: [edges]}}")
    return out


def check_subgroups(items: Sequence[Mapping], subgroups: Sequence[Any] | None) -> list[tuple[str, list[float] | None]]:
    """:func:`subgroup_specs`, checking that every column is a key of the datalist items.

    Raises:
        ValueError: naming the unknown column and the columns the datalist has.
    """
    specs = subgroup_specs(subgroups)
    for column, _ in specs:
        if not any(column in it for it in items):
            keys = sorted({k for it in items for k in it if k not in ("image", "label")})
            raise ValueError(f"subgroup column {column!r} is not in the datalist; its columns are {keys}")
    return specs


def _write_rows(path: Path, header: list[str], rows: list[list]) -> None:
    with atomic_write(path, newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def annotate_predictions(path: str | os.PathLike, items: Sequence[Mapping], subgroups: Sequence[Any] | None = None) -> None:
    """Add a pseudonymous ``patient`` column and ``group_<column>`` columns to a predictions CSV.

    Rows are matched to datalist items by ``id``. Patients are numbered in order of appearance (``P0001`` ...),
    so the file carries no patient identifier; a row without a patient id gets an empty cell (its own unit in
    the bootstrap).

    Raises:
        ValueError: a subgroup column that no item has.
    """
    path = Path(path)
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        rows = list(reader)
    if header is None:
        return
    by_id = {str(it.get("id")): it for it in items}
    specs = check_subgroups(items, subgroups)
    keep = [i for i, h in enumerate(header) if h != "patient" and not h.startswith("group_")]
    header = [header[i] for i in keep]
    rows = [[r[i] for i in keep] for r in rows]
    matched = [by_id.get(r[0], {}) for r in rows]
    extra_header, extra = [], [[] for _ in rows]
    if any(it.get("patient_id") not in (None, "") for it in matched):
        numbers: dict[str, str] = {}
        extra_header.append("patient")
        for e, it in zip(extra, matched):
            pid = it.get("patient_id")
            if pid in (None, ""):
                e.append("")
            else:
                e.append(numbers.setdefault(str(pid), f"P{len(numbers) + 1:04d}"))
    for column, bins in specs:
        extra_header.append(f"group_{column}")
        values = group_values([it.get(column) for it in matched], bins)
        for e, v in zip(extra, values):
            e.append(v)
    _write_rows(path, header + extra_header, [r + e for r, e in zip(rows, extra)])


def read_predictions(path: str | os.PathLike) -> dict[str, Any]:
    """Read a predictions CSV into arrays.

    Returns:
        ``{"ids", "label_names", "probs" (N, C), "labels" (N, C) 1/0/NaN or None, "decisions" (N, C) or None,
        "patients" (list or None), "uncertainty" (N, C) or None, "groups" {column: values}}``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no predictions file (run the evaluate workflow first)")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        rows = list(reader)
    names = [h[len("prob_"):] for h in header if h.startswith("prob_")]
    if not names:
        raise ValueError(f"{path}: no prob_<label> columns")
    if not rows:
        raise ValueError(f"{path}: no rows")

    def matrix(prefix: str, blank_nan: bool) -> np.ndarray | None:
        if not all(f"{prefix}{n}" in header for n in names):
            return None
        out = np.empty((len(rows), len(names)))
        for i, r in enumerate(rows):
            for k, n in enumerate(names):
                cell = (r[f"{prefix}{n}"] or "").strip()
                try:
                    out[i, k] = math.nan if (cell == "" and blank_nan) else float(cell)
                except ValueError as e:
                    raise ValueError(f"{path} row {i + 2}, column {prefix}{n}: not a number: {cell!r}") from e
        return out

    probs = matrix("prob_", blank_nan=False)
    return {
        "ids": [r["id"] for r in rows],
        "label_names": names,
        "probs": probs,
        "labels": matrix("label_", blank_nan=True),
        "decisions": matrix("pred_", blank_nan=False),
        "patients": [r["patient"] for r in rows] if "patient" in header else None,
        "uncertainty": matrix("uncertainty_", blank_nan=True),
        "groups": {h[len("group_"):]: [r[h] for r in rows] for h in header if h.startswith("group_")},
    }



def _infer_task(labels: np.ndarray, probs: np.ndarray) -> str:
    known = ~np.isnan(labels).any(axis=1)
    one_hot = labels.shape[1] > 1 and known.any() and np.all(labels[known].sum(axis=1) == 1)
    sums_to_one = np.allclose(probs.sum(axis=1), 1.0, atol=1e-3)
    return "multiclass" if one_hot and sums_to_one else "multilabel"


#: per_label.csv columns: counts first, then every figure next to its interval
PER_LABEL_COLUMNS = [
    "label", "positives", "negatives", "unknown", "in_mean_auc", "auc", "auc_ci_lower", "auc_ci_upper",
    "average_precision", "threshold", "threshold_chosen_by", "threshold_fallback",
    "sensitivity", "sensitivity_ci_lower", "sensitivity_ci_upper", "specificity", "specificity_ci_lower",
    "specificity_ci_upper", "ppv", "ppv_ci_lower", "ppv_ci_upper", "npv", "npv_ci_lower", "npv_ci_upper", "f1",
    "accuracy", "ece", "brier", "calibration_intercept", "calibration_slope", "tp", "fp", "tn", "fn",
    "not_estimable", "undefined"]


def _per_label_csv(path: Path, metrics: dict) -> None:
    rows = []
    for name, m in metrics["per_label"].items():
        flat = {**m, "label": name, "in_mean_auc": name in metrics.get("mean_auc_labels", []),
                "undefined": "; ".join(f"{k}: {v}" for k, v in (m.get("undefined") or {}).items()),
                "not_estimable": "; ".join(f"{k}: {v}" for k, v in (m.get("not_estimable") or {}).items())}
        for key in ("auc", "sensitivity", "specificity", "ppv", "npv"):
            ci = m.get(f"{key}_ci") or [None, None]
            flat[f"{key}_ci_lower"], flat[f"{key}_ci_upper"] = ci[0], ci[1]
        row = []
        for c in PER_LABEL_COLUMNS:
            v = flat.get(c)
            row.append("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v))
        rows.append(row)
    _write_rows(path, PER_LABEL_COLUMNS, rows)


def _threshold_provenance(metrics: dict, op: dict | None) -> None:
    """Copy how each threshold was chosen (validation, fallback, fixed, stored) into the per-label figures and
    list the fallbacks at the top level, so metrics.json and per_label.csv flag them."""
    chosen = {c.get("label"): c for c in (op or {}).get("labels", [])}
    fallbacks = {}
    for name, m in metrics["per_label"].items():
        c = chosen.get(name, {})
        m["threshold_chosen_by"] = c.get("chosen_by") or (c.get("method") if c else "default 0.5")
        m["threshold_fallback"] = c.get("fallback")
        if c.get("fallback"):
            fallbacks[name] = c["fallback"]
    metrics["threshold_fallbacks"] = fallbacks


def build_report(
    folder: str | os.PathLike,
    task: str | None = None,
    subgroups: Sequence[Any] | None = None,
    n_bootstrap: int | None = None,
    seed: int | None = None,
    n_bins: int | None = None,
    saliency_max: int | None = None,
    html: bool = True,
    min_positives: int | None = None,
) -> dict[str, Any]:
    """(Re)build the evaluation of a folder from its files.

    Reads ``predictions.csv`` (with labels), ``thresholds.json`` (operating points chosen on validation; the
    thresholds in an earlier ``metrics.json`` or 0.5 otherwise) and the settings of an earlier
    ``metrics.json``; writes ``metrics.json``, ``per_label.csv`` and, with ``html``, ``plots/*.png`` and
    ``report.html``. Arguments left ``None`` take the earlier settings (or the defaults: 1000 resamples, seed
    0, 10 bins, 24 saliency images, ``min_positives`` 10). With an ``external.json`` (written by the external
    validation run) the report compares these results with the internal ones and summarises the data shift;
    with ``saliency/shortcuts.json`` it shows where the saliency maps sit; with ``uncertainty_<label>`` columns it
    adds the referral curve and writes ``referral.csv`` (:mod:`medclass.report.referral`).

    Returns:
        The metrics dictionary (JSON-ready: undefined values are ``None``).
    """
    folder = Path(folder)
    pred = read_predictions(folder / "predictions.csv")
    if pred["labels"] is None:
        raise ValueError(f"{folder / 'predictions.csv'}: no label_<label> columns; a report needs labelled data")
    names = pred["label_names"]
    previous = read_json(folder / "metrics.json") or {}
    settings = dict(previous.get("settings") or {})
    op = read_json(folder / "thresholds.json")
    task = task or settings.get("task") or (op or {}).get("task") or previous.get("task") or \
        _infer_task(pred["labels"], pred["probs"])
    if task not in TASKS:
        raise ValueError(f"task must be multilabel, binary or multiclass, got {task!r}")
    settings.update({k: v for k, v in dict(task=task, n_bootstrap=n_bootstrap, seed=seed, n_bins=n_bins,
                                            saliency_max=saliency_max, min_positives=min_positives).items()
                     if v is not None})
    if subgroups is not None:
        settings["subgroups"] = list(subgroups)
    settings.setdefault("n_bootstrap", 1000)
    settings.setdefault("seed", 0)
    settings.setdefault("n_bins", 10)
    settings.setdefault("saliency_max", 24)
    settings.setdefault("min_positives", MIN_POSITIVES)

    thresholds = np.full(len(names), 0.5)
    source = "default 0.5"
    if op and op.get("labels"):
        by_label = {c["label"]: c.get("threshold") for c in op["labels"]}
        if set(by_label) != set(names):
            raise ValueError(f"{folder / 'thresholds.json'}: labels {sorted(by_label)} differ from the predictions' "
                             f"{names}")
        thresholds = np.array([by_label[n] if by_label[n] is not None else 0.5 for n in names], dtype=float)
        source = "thresholds.json"
    elif previous.get("thresholds"):
        thresholds = np.array([previous["thresholds"].get(n) or 0.5 for n in names], dtype=float)
        source = "metrics.json"

    wanted = [c for c, _ in subgroup_specs(settings.get("subgroups"))]
    groups = {c: v for c, v in pred["groups"].items() if not wanted or c in wanted}
    metrics = evaluate_predictions(pred["labels"], pred["probs"], names, task, thresholds, patients=pred["patients"],
                                   groups=groups, n_bootstrap=int(settings["n_bootstrap"]),
                                   seed=int(settings["seed"]), n_bins=int(settings["n_bins"]),
                                   min_positives=int(settings["min_positives"]))
    _threshold_provenance(metrics, op)
    metrics["operating_points"] = op or {"operating_point": source}
    metrics["temperature"] = (op or {}).get("temperature", 1.0)
    metrics["settings"] = settings
    external = read_json(folder / EXTERNAL_FILE)
    if external is not None:
        metrics["external"] = external_comparison(metrics, external, folder)
    if pred["uncertainty"] is not None:  # an ensemble / TTA / MC-dropout evaluation: the referral curve
        metrics["referral"] = referral_summary(pred, thresholds, task)
        write_referral_csv(folder / REFERRAL_FILE, pred)
    shortcuts = read_json(folder / "saliency" / SHORTCUTS_FILE)
    if shortcuts is not None:
        metrics["shortcuts"] = shortcuts
    metrics = to_json(metrics)
    _atomic_json(folder / "metrics.json", metrics)
    _per_label_csv(folder / "per_label.csv", metrics)
    logger.info("metrics written to %s (mean AUC %s over %d of %d labels)", folder / "metrics.json",
                metrics["mean_auc"], len(metrics["mean_auc_labels"]), len(names))
    if metrics["threshold_fallbacks"]:
        logger.warning("thresholds not chosen on validation (too few cases) for %s",
                       ", ".join(metrics["threshold_fallbacks"]))
    if html:
        path = write_html(folder, pred, metrics, saliency_max=int(settings["saliency_max"]))
        logger.info("report written to %s", path)
    return metrics


def _atomic_json(path: Path, obj: Any) -> None:
    atomic_json(path, obj, allow_nan=False)

"""External validation: the model's stored thresholds carried to a second datalist (never re-chosen there), the
data shift against training, and the report section comparing internal and external results per label.

The external run (``configs/external.yaml``) evaluates every image of the external datalist. Before the report
is built, :func:`prepare_external` copies the thresholds chosen on the internal validation split into the
evaluation folder (checking that they are the ones stored in the model), and writes ``external.json``: where the
thresholds came from, the internal evaluation folder, and the data-shift summary.
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medclass.data import label_matrix
from medclass.files import atomic_json
from medclass.metrics import to_json
from medclass.metrics.shift import image_stats, intensity_shift, prevalence_shift, summarize_images
from medclass.report.tables import ci_cell, fmt, table

logger = logging.getLogger(__name__)

__all__ = ["external_comparison", "external_html", "prepare_external", "read_image_stats"]


#: written into an evaluation folder by the external validation run (internal folder, data shift)
EXTERNAL_FILE = "external.json"

def _read(image: Any) -> np.ndarray:
    if isinstance(image, np.ndarray):
        return image
    from monai.transforms import LoadImage

    return np.asarray(LoadImage(image_only=True)(image))


def read_image_stats(items: Sequence[Mapping], max_images: int = 200, seed: int = 0) -> list[dict[str, Any]]:
    """:func:`medclass.metrics.shift.image_stats` of up to ``max_images`` items (a seeded sample), read as they
    are on disk (before any preprocessing). Unreadable images are skipped with a warning."""
    items = list(items)
    if not items or max_images <= 0:
        return []
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(items), size=min(len(items), int(max_images)), replace=False).tolist())
    out, failed = [], 0
    for k in chosen:
        try:
            out.append(image_stats(_read(items[k]["image"])))
        except Exception as exc:  # noqa: BLE001 - a summary must not stop on one bad file
            failed += 1
            if failed <= 3:
                logger.warning("data-shift summary: cannot read %s (%s)", items[k].get("id"), exc)
    if failed:
        logger.warning("data-shift summary: %d of %d sampled images unreadable", failed, len(chosen))
    return out


def _labels(items: Sequence[Mapping], n: int) -> np.ndarray:
    return label_matrix([it for it in items if it.get("label") is not None], num_labels=n)


def prepare_external(folder: str | os.PathLike, items: Sequence[Mapping], thresholds_file: str | os.PathLike,
                     model_path: str | os.PathLike | None = None, internal_dir: str | os.PathLike | None = None,
                     training_items: Sequence[Mapping] | None = None, source: Any = None,
                     max_images: int = 200) -> dict[str, Any]:
    """Put the stored thresholds into an external evaluation folder and write ``external.json``.

    Args:
        folder: the external evaluation folder.
        items: the external items (labelled).
        thresholds_file: the model's ``thresholds.json`` (chosen on the internal validation split).
        model_path: the model; its stored ``thresholds`` must equal the file's (otherwise the predictions'
            decisions and the report would disagree).
        internal_dir: the internal evaluation folder to compare with.
        training_items: the training items, the reference of the data-shift summary (``None``: no summary).
        source: a description of the external data (its datalist).
        max_images: images read per set for the size/intensity summary.

    Returns:
        What was written to ``external.json``.

    Raises:
        FileNotFoundError: no ``thresholds_file`` (run the evaluate workflow first).
        ValueError: the file's thresholds differ from the model's, or it was written for other labels.
    """
    folder, src = Path(folder), Path(thresholds_file)
    if not src.exists():
        raise FileNotFoundError(f"{src}: no thresholds chosen on the internal validation split; run the evaluate "
                                "workflow before external validation")
    op = json.loads(src.read_text())
    chosen = [c.get("threshold") for c in op.get("labels", [])]
    if model_path is not None and Path(model_path).exists() and op.get("task") != "multiclass":
        import torch

        stored = torch.load(Path(model_path), map_location="cpu", weights_only=True).get("thresholds")
        if stored is not None and (len(chosen) != stored.numel() or any(
                c is None or abs(float(c) - float(s)) > 1e-6 for c, s in zip(chosen, stored.tolist()))):
            raise ValueError(f"{src}: thresholds {chosen} differ from those stored in {model_path} "
                             f"({stored.tolist()}); re-run the evaluate workflow")
    folder.mkdir(parents=True, exist_ok=True)
    op = {**op, "carried_from": str(src), "note": "chosen on the internal validation split; not re-chosen"}
    _write_json(folder / "thresholds.json", op)
    names = [c["label"] for c in op.get("labels", [])]
    shift: dict[str, Any] | None = None
    if training_items is not None:
        train_stats = read_image_stats(training_items, max_images)
        ext_stats = read_image_stats(items, max_images)
        shift = {"training": summarize_images(train_stats), "external": summarize_images(ext_stats),
                 "intensity": intensity_shift([r["mean"] for r in train_stats], [r["mean"] for r in ext_stats]),
                 "prevalence": prevalence_shift(names, _labels(training_items, len(names)),
                                                _labels(items, len(names)))}
        tr, ex = shift["training"]["shapes"], shift["external"]["shapes"]
        shift["size_flagged"] = bool(tr and ex and tr[0]["shape"] != ex[0]["shape"])
        shift["max_images"] = int(max_images)
    out = {"source": None if source is None else str(source), "images": len(items),
           "thresholds_file": str(src), "internal_dir": None if internal_dir is None else str(internal_dir),
           "shift": shift}
    _write_json(folder / EXTERNAL_FILE, to_json(out))
    return out


def _write_json(path: Path, obj: Any) -> None:
    atomic_json(path, to_json(obj), allow_nan=False)


def _figures(m: Mapping) -> dict[str, Any]:
    keys = ("auc", "auc_ci", "auc_se", "positives", "negatives", "sensitivity", "sensitivity_ci", "specificity",
            "specificity_ci", "threshold", "estimable", "not_estimable")
    return {k: m.get(k) for k in keys}


def external_comparison(metrics: Mapping, external: Mapping, folder: str | os.PathLike) -> dict[str, Any]:
    """Internal against external results per label (the internal ones from ``internal_dir/metrics.json``).

    The AUC difference (external minus internal) has the interval ``d +- z * sqrt(se_int^2 + se_ext^2)`` of two
    independent DeLong estimates; it is not estimable where either AUC is not (too few cases).

    Returns:
        ``{"source", "images", "internal_dir", "internal_found", "thresholds_same", "shift", "per_label":
        {label: {"internal": {...}, "external": {...}, "auc_difference", "auc_difference_ci", "note"}}}``.
    """
    from scipy import stats

    internal_dir = external.get("internal_dir")
    internal = None
    if internal_dir and (Path(internal_dir) / "metrics.json").exists() and \
            Path(internal_dir).resolve() != Path(folder).resolve():
        internal = json.loads((Path(internal_dir) / "metrics.json").read_text())
    z = float(stats.norm.ppf(0.975))
    per_label = {}
    same = True
    for name, m in metrics["per_label"].items():
        ext = _figures(m)
        row: dict[str, Any] = {"external": ext, "internal": None, "auc_difference": math.nan,
                               "auc_difference_ci": [math.nan, math.nan], "note": None}
        im = (internal or {}).get("per_label", {}).get(name)
        if im is not None:
            row["internal"] = _figures(im)
            if im.get("threshold") is not None and m.get("threshold") is not None and \
                    abs(float(im["threshold"]) - float(m["threshold"])) > 1e-6:
                same = False
            if im.get("estimable", True) and m.get("estimable") and im.get("auc_se") and m.get("auc_se"):
                d = float(m["auc"]) - float(im["auc"])
                se = math.sqrt(float(im["auc_se"]) ** 2 + float(m["auc_se"]) ** 2)
                row["auc_difference"], row["auc_difference_ci"] = d, [d - z * se, d + z * se]
            else:
                row["note"] = "difference not estimable: too few cases on one side"
        per_label[name] = row
    return {"source": external.get("source"), "images": external.get("images"), "internal_dir": internal_dir,
            "internal_found": internal is not None, "thresholds_same": same if internal is not None else None,
            "thresholds_file": external.get("thresholds_file"), "shift": external.get("shift"),
            "internal_mean_auc": (internal or {}).get("mean_auc"),
            "internal_mean_auc_labels": (internal or {}).get("mean_auc_labels"),
            "per_label": per_label}


def _iqr(q: Mapping) -> str:
    return f"{fmt(q.get('median'))} [{fmt(q.get('q1'))}, {fmt(q.get('q3'))}]"


def _shift_html(shift: Mapping | None) -> str:
    if not shift:
        return '<p class="note">No data-shift summary (no training items given).</p>'
    tr, ex = shift["training"], shift["external"]

    def shapes(s):
        return "<br>".join(f"{'&times;'.join(map(str, x['shape']))}: {x['images']}" for x in s["shapes"]) or "n/a"

    inten = shift["intensity"]
    flag = '<span class="undef">shifted</span>'
    rows = [["images read (sample)", str(tr["images"]), str(ex["images"]), ""],
            ["array shape as read: images", shapes(tr), shapes(ex), flag if shift.get("size_flagged") else ""],
            ["per-image mean intensity: median [IQR]", _iqr(tr["mean"]), _iqr(ex["mean"]),
             f"SMD {fmt(inten.get('smd'), 2)}, KS {fmt(inten.get('ks'), 2)} (p {fmt(inten.get('ks_p_value'), 3)})"
             + (f" {flag}" if inten.get("flagged") else "")],
            ["per-image intensity SD: median [IQR]", _iqr(tr["std"]), _iqr(ex["std"]), ""],
            ["per-image 99th percentile: median [IQR]", _iqr(tr["p99"]), _iqr(ex["p99"]), ""],
            ["largest value (bit depth)", fmt(tr["max"], 1), fmt(ex["max"], 1), ""]]
    out = table(["", "training", "external", "shift"], rows)
    prev = []
    for name, p in (shift.get("prevalence") or {}).items():
        cells = []
        for key in ("training", "external"):
            q = p[key]
            cells.append(f"{ci_cell(q['prevalence'], q['ci'])}<br><span class=\"n\">{q['positives']}/{q['known']}"
                         "</span>")
        prev.append([html.escape(name), *cells, fmt(p.get("p_value"), 3) + (f" {flag}" if p.get("flagged") else "")])
    return out + table(["label", "training prevalence [95% CI]", "external prevalence [95% CI]",
                        "Fisher p"], prev)


def external_html(ext: Mapping) -> str:
    """The report section: where the thresholds came from, internal vs external per label, the data shift."""
    parts = ["<h2>External validation</h2>"]
    parts.append(f'<p class="note">External data: {html.escape(str(ext.get("source")))} '
                 f"({ext.get('images')} images). Thresholds carried from "
                 f"{html.escape(str(ext.get('thresholds_file')))} (chosen on the internal validation split), never "
                 "re-chosen on these data. AUC difference: external minus internal, 95% interval from the two "
                 "DeLong standard errors (independent samples).</p>")
    if not ext.get("internal_found"):
        parts.append(f'<p class="undef">No internal evaluation found in {html.escape(str(ext.get("internal_dir")))}:'
                     " run the evaluate workflow for the comparison.</p>")
    elif ext.get("thresholds_same") is False:
        parts.append('<p class="undef">The internal evaluation used other thresholds than this model now stores: '
                     "re-run the internal evaluation before comparing.</p>")
    rows = []
    for name, r in ext["per_label"].items():
        e, i = r["external"], r["internal"] or {}

        def auc(m):
            if not m:
                return "n/a"
            reason = (m.get("not_estimable") or {}).get("auc")
            cell = ci_cell(m.get("auc"), m.get("auc_ci"), reason)
            if reason and m.get("auc") is not None:
                cell = f'{cell}<br><span class="undef">not estimable: {html.escape(reason)}</span>'
            return f"{cell}<br><span class=\"n\">{m.get('positives')}+ / {m.get('negatives')}&minus;</span>"

        def prop(m, key):
            return ci_cell(m.get(key), m.get(f"{key}_ci")) if m else "n/a"

        diff = ci_cell(r["auc_difference"], r["auc_difference_ci"], r.get("note") or "no internal result")
        rows.append([html.escape(name), fmt(e.get("threshold"), 4), auc(i), auc(e), diff, prop(i, "sensitivity"),
                     prop(e, "sensitivity"), prop(i, "specificity"), prop(e, "specificity")])
    parts.append(table(["label", "threshold (stored)", "internal AUC [95% CI]", "external AUC [95% CI]",
                        "AUC difference [95% CI]", "internal sensitivity", "external sensitivity",
                        "internal specificity", "external specificity"], rows))
    parts.append("<h3>Data shift against training</h3>" + _shift_html(ext.get("shift")))
    return "\n".join(parts)

"""One self-contained HTML page (inline CSS, PNGs embedded as base64, no script, no external resource)."""

from __future__ import annotations

import base64
import datetime
import html
import json
import re
from pathlib import Path

from medclass.files import atomic_text
from medclass.report import plots
from medclass.report.card import DATA_FILE, MODEL_FILE, model_data_sections, sections_html
from medclass.report.external import external_html
from medclass.report.referral import referral_figure, referral_html
from medclass.report.shortcuts import shortcuts_html
from medclass.report.tables import (
    CSS,
    OPERATING_POINT_HEADER,
    PER_LABEL_HEADER,
    fmt as _f,
    headline_rows,
    operating_point_rows,
    per_label_rows,
    table as _table,
    warnings_html,
)

#: the folder of an evaluation folder the report's plots go to, and the page itself
PLOTS_DIR = "plots"
REPORT_FILE = "report.html"



def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except json.JSONDecodeError:
        return None


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "label"


def saliency_images(folder: Path, limit: int) -> list[Path]:
    """PNG files under ``folder/saliency`` (any depth), sorted, at most ``limit``."""
    root = folder / "saliency"
    if not root.is_dir() or limit <= 0:
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() == ".png")[:limit]


def write_html(folder: Path, pred: dict, metrics: dict, saliency_max: int = 24) -> Path:
    """Draw the plots into ``folder/plots`` and write ``folder/report.html``; returns the HTML path."""
    names = metrics["label_names"]
    task = metrics["task"]
    y, p = pred["labels"], pred["probs"]
    plot_dir = folder / PLOTS_DIR
    plot_dir.mkdir(parents=True, exist_ok=True)
    figures: list[tuple[str, bytes, str]] = []  # (file, png, caption)

    for k, name in enumerate(names):
        m = metrics["per_label"][name]
        und = m["undefined"].get("auc")
        png = plots.roc_pr_figure(name, y[:, k], p[:, k], m["threshold"], m["auc"], m["average_precision"],
                                  f"AUC undefined: {und}" if und else None)
        figures.append((f"roc_pr_{_safe(name)}.png", png, f"{name}: ROC and precision-recall, operating point in red"))
    cal = metrics["calibration"]
    curves = {"top label": cal["top_label"]} if task == "multiclass" else cal["per_label"]
    rel_png = plots.reliability_grid(curves, "Reliability" + (" (top label)" if task == "multiclass" else ""))
    if task == "multiclass":
        cm_png = plots.confusion_figure(metrics["multiclass"]["confusion_matrix"], names)
    else:
        cm_png = plots.label_confusions_figure(metrics["per_label"])
    for file, png in (("reliability.png", rel_png), ("confusion.png", cm_png)):
        figures.append((file, png, file))
    for file, png, _ in figures:
        (plot_dir / file).write_bytes(png)

    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>medclass evaluation"
             f"</title><style>{CSS}</style></head><body>"]
    op = metrics.get("operating_points") or {}
    boot = metrics.get("bootstrap") or {}
    level = int(round(float(boot.get("level", 0.95)) * 100))
    parts.append("<h1>medclass evaluation report</h1>")
    if op.get("split"):
        chosen = (f"Operating points chosen on the {html.escape(str(op['split']))} split "
                  f"({html.escape(str(op.get('operating_point')))}), never on the evaluated split")
    else:
        chosen = f"Thresholds: {html.escape(str(op.get('operating_point', 'default 0.5')))} (not chosen on validation)"
    parts.append(
        f'<p class="note">{metrics["n"]} images, task {html.escape(task)}, {len(names)} label(s). {chosen}; '
        f"temperature {_f(float(metrics.get('temperature') or 1.0))}. Intervals ({level}%): Wilson for "
        f"sensitivity, specificity, PPV and NPV; DeLong for each label's AUC (images treated as independent); "
        f"percentile bootstrap for the mean and micro-averaged AUC, {boot.get('n_resamples', 0)} resamples of "
        f"{boot.get('units', 'n/a')} {html.escape(str(boot.get('unit', 'image')))}s (seed {boot.get('seed', 0)}). "
        f"A figure that cannot be estimated says so, with the reason. Unknown labels are excluded per label. "
        f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.</p>")
    parts.append(warnings_html(metrics))
    model, data = _read_json(folder / MODEL_FILE), _read_json(folder / DATA_FILE)
    if model or data:  # written by the evaluate workflow; the model card (model_card.html) has the same section
        parts.append("<h2>Model and data</h2>" + sections_html(model_data_sections(model, data, metrics), level=3))
    parts.append("<h2>Summary</h2>" + _table(["figure (what it averages)", "value [95% CI]"], headline_rows(metrics)))
    parts.append("<h2>Operating points (thresholds chosen on validation)</h2>"
                 f'<p class="note">A threshold is chosen on the validation split only where a label has at least '
                 f"{metrics.get('min_positives', 10)} positive and negative validation cases; otherwise it falls back "
                 "(chosen by: fallback) as the notes say.</p>" + _table(OPERATING_POINT_HEADER,
                                                                        operating_point_rows(metrics, op)))
    parts.append("<h2>Discrimination and calibration per label</h2>"
                 + _table(PER_LABEL_HEADER, per_label_rows(metrics)))
    if metrics.get("external"):
        parts.append(external_html(metrics["external"]))

    parts.append("<h2>ROC and precision-recall curves</h2>")
    for _file, png, caption in figures[:len(names)]:
        parts.append(f"<figure>{_img(png, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("<h2>Calibration</h2>" + '<p class="note">Observed frequency against mean predicted probability '
                 "per bin, with Wilson 95% intervals and the number of images in each bin.</p>"
                 f"<figure>{_img(rel_png, 'reliability diagram')}</figure>")
    parts.append("<h2>Confusion matri" + ("x" if task == "multiclass" else "ces at the operating points") + "</h2>"
                 + f"<figure>{_img(cm_png, 'confusion matrix')}</figure>")
    if task == "multiclass":
        acc = metrics["multiclass"]["per_class_accuracy"]
        parts.append(_table(["class", "accuracy (recall)"], [[html.escape(n), _f(acc[n])] for n in names]))

    if metrics.get("referral"):
        ref_png = referral_figure(metrics["referral"])
        (plot_dir / "referral.png").write_bytes(ref_png)
        parts.append(referral_html(metrics["referral"], _img(ref_png, "referral curve")))

    subs = metrics.get("subgroups") or []
    parts.append("<h2>Subgroups</h2>")
    if subs:
        rows = []
        for s in subs:
            cells = []
            for n in names:
                q = s["per_label"][n]
                cells.append(f"AUC {_f(q['auc'])}<br>Se {_f(q['sensitivity'], 2)} Sp {_f(q['specificity'], 2)}"
                             f"<br>{q['positives']}+/{q['negatives']}&minus;")
            rows.append([html.escape(s["column"]), html.escape(s["value"]), str(s["n"]), _f(s["mean_auc"]), *cells])
        header = ["column", "value", "n", "mean AUC (every label with a defined AUC)", *map(html.escape, names)]
        parts.append(_table(header, rows, left=2))
    else:
        parts.append('<p class="note">No subgroup columns configured (set <code>subgroups</code>, e.g. '
                     "<code>[sex, view, {column: age, bins: [0, 40, 60, 80]}]</code>).</p>")

    images = saliency_images(folder, saliency_max)
    if metrics.get("shortcuts"):
        parts.append(shortcuts_html(metrics["shortcuts"]))
    parts.append("<h2>Saliency maps</h2>")
    if images:
        parts.append('<div class="gallery">')
        for img in images:
            rel = img.relative_to(folder).as_posix()
            parts.append(f"<figure>{_img(img.read_bytes(), rel)}<figcaption>{html.escape(rel)}</figcaption></figure>")
        parts.append("</div>")
        total = sum(1 for q in (folder / "saliency").rglob("*.png"))
        if total > len(images):
            parts.append(f'<p class="note">{len(images)} of {total} saliency images shown.</p>')
    else:
        parts.append('<p class="note">No saliency maps in this evaluation folder.</p>')
    parts.append("</body></html>")
    path = folder / REPORT_FILE
    atomic_text(path, "\n".join(parts))
    return path

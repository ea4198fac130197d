"""One self-contained HTML page (inline CSS, PNGs embedded as base64, no script, no external resource)."""

from __future__ import annotations

import base64
import datetime
import html
import re
from pathlib import Path
from typing import Any

import numpy as np

from medclass.files import atomic_text
from medclass.report import plots

CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1180px;
color:#222;padding:0 16px}
h1{font-size:1.6em;margin-bottom:0.2em}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:1.6em}
table{border-collapse:collapse;margin:8px 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:3px 7px;
text-align:right}th{background:#f1f3f6}td.l,th.l{text-align:left}.scroll{overflow-x:auto}
.note{color:#555;font-size:0.9em}.undef{color:#b00}figure{display:inline-block;margin:6px;vertical-align:top}
figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:0.8em;color:#555;max-width:360px}
.gallery img{max-width:340px}
"""


def _f(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return '<span class="undef">undefined</span>'
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return html.escape(str(v))


def _ci(v: Any, ci: Any) -> str:
    if v is None:
        return _f(v)
    if not ci or ci[0] is None or ci[1] is None:
        return _f(v)
    return f"{_f(v)} [{ci[0]:.3f}, {ci[1]:.3f}]"


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "label"


def _table(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    th = "".join(f'<th class="{"l" if i < left else ""}">{h}</th>' for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{c}</td>' for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f'<div class="scroll"><table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>'


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
    plot_dir = folder / "plots"
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
    rel_png = plots.reliability_figure(curves, "Reliability diagram" + (" (top label)" if task == "multiclass" else ""))
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
    parts.append("<h1>medclass evaluation report</h1>")
    if op.get("split"):
        chosen = (f"Operating points chosen on the {html.escape(str(op['split']))} split "
                  f"({html.escape(str(op.get('operating_point')))}), never on the evaluated split")
    else:
        chosen = f"Thresholds: {html.escape(str(op.get('operating_point', 'default 0.5')))} (not chosen on validation)"
    parts.append(
        f'<p class="note">{metrics["n"]} images, task {html.escape(task)}, {len(names)} label(s). {chosen}; '
        f"temperature {_f(float(metrics.get('temperature') or 1.0))}. Intervals: "
        f"{int(round(boot.get('level', 0.95) * 100))}% percentile bootstrap, {boot.get('n_resamples', 0)} resamples "
        f"of {boot.get('units', 'n/a')} {html.escape(str(boot.get('unit', 'image')))}s (seed {boot.get('seed', 0)}). "
        f"Unknown labels are excluded per label. Generated "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.</p>")

    mac = metrics["macro"]
    summary = [["mean AUC", _ci(metrics["mean_auc"], metrics["mean_auc_ci"])],
               ["mean average precision", _f(mac["average_precision"])],
               ["mean sensitivity at operating points", _f(mac["sensitivity"])],
               ["mean specificity at operating points", _f(mac["specificity"])],
               ["mean F1", _f(mac["f1"])],
               ["expected calibration error", _f(metrics["calibration"]["ece"])],
               ["accuracy" + (" (arg-max)" if task == "multiclass" else " (all known labels)"), _f(metrics["accuracy"])]]
    if task == "multiclass":
        mc = metrics["multiclass"]
        summary += [["balanced accuracy", _f(mc["balanced_accuracy"])], ["macro AUC (one-vs-rest)", _f(mc["macro_auc"])],
                    ["micro AUC", _f(mc["micro_auc"])]]
    parts.append("<h2>Summary</h2>" + _table(["metric", "value"], summary))

    val = {c["label"]: c for c in op.get("labels", [])}
    rows = []
    for name in names:
        m, v = metrics["per_label"][name], val.get(name, {})
        method = v.get("method", "n/a")
        if v.get("target") is not None and method != "fixed":
            method += f" {v['target']:g}"
        notes = "; ".join(f"{k}: {r}" for k, r in m["undefined"].items())
        if v.get("undefined"):
            notes = "; ".join(x for x in (f"validation: {v['undefined']}", notes) if x)
        rows.append([html.escape(name), html.escape(method), _f(m["threshold"], 4), _f(v.get("sensitivity")),
                     _f(v.get("specificity")), _ci(m["sensitivity"], m["sensitivity_ci"]),
                     _ci(m["specificity"], m["specificity_ci"]), _f(m["ppv"]), _f(m["npv"]), _f(m["f1"]),
                     _f(m["accuracy"]), f"{m['positives']}/{m['negatives']}/{m['unknown']}",
                     f'<span class="undef">{html.escape(notes)}</span>' if notes else ""])
    parts.append("<h2>Operating points (thresholds chosen on validation)</h2>" + _table(
        ["label", "method", "threshold", "val sens", "val spec", "test sensitivity [95% CI]",
         "test specificity [95% CI]", "PPV", "NPV", "F1", "accuracy", "pos/neg/unknown", "notes"], rows))

    rows = [[html.escape(n), _ci(metrics["per_label"][n]["auc"], metrics["per_label"][n]["auc_ci"]),
             _f(metrics["per_label"][n]["average_precision"]), _f(metrics["per_label"][n]["ece"])] for n in names]
    parts.append("<h2>Discrimination and calibration per label</h2>" +
                 _table(["label", "AUC [95% CI]", "average precision", "ECE"], rows))

    parts.append("<h2>ROC and precision-recall curves</h2>")
    for _file, png, caption in figures[:len(names)]:
        parts.append(f"<figure>{_img(png, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("<h2>Calibration</h2>" + f"<figure>{_img(rel_png, 'reliability diagram')}</figure>")
    parts.append("<h2>Confusion matri" + ("x" if task == "multiclass" else "ces at the operating points") + "</h2>"
                 + f"<figure>{_img(cm_png, 'confusion matrix')}</figure>")
    if task == "multiclass":
        acc = metrics["multiclass"]["per_class_accuracy"]
        parts.append(_table(["class", "accuracy (recall)"], [[html.escape(n), _f(acc[n])] for n in names]))

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
        parts.append(_table(["column", "value", "n", "mean AUC", *map(html.escape, names)], rows, left=2))
    else:
        parts.append('<p class="note">No subgroup columns configured (set <code>subgroups</code>, e.g. '
                     "<code>[sex, view, {column: age, bins: [0, 40, 60, 80]}]</code>).</p>")

    images = saliency_images(folder, saliency_max)
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
    path = folder / "report.html"
    atomic_text(path, "\n".join(parts))
    return path

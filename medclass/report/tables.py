"""HTML building blocks of the report: number formatting that never hides a missing figure, and the summary,
operating-point and per-label tables (each figure next to its interval and the counts behind it)."""

from __future__ import annotations

import html
from typing import Any

import numpy as np

__all__ = ["CSS", "ci_cell", "count_cell", "fmt", "headline_rows", "operating_point_rows", "per_label_rows", "table",
           "warnings_html"]


#: the style of every medclass HTML page (report, model card): wide tables scroll in ``.scroll`` boxes
CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1180px;
color:#222;padding:0 16px}
h1{font-size:1.6em;margin-bottom:0.2em}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:1.6em}
table{border-collapse:collapse;margin:8px 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:3px 7px;
text-align:right}th{background:#f1f3f6}td.l,th.l{text-align:left}.scroll{overflow-x:auto}
.note{color:#555;font-size:0.9em}.undef{color:#b00}figure{display:inline-block;margin:6px;vertical-align:top}
figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:0.8em;color:#555;max-width:360px}
.gallery img{max-width:340px}.n{color:#666;font-size:0.85em}
.warn{border:1px solid #d9a300;background:#fff8e1;padding:6px 12px;margin:10px 0}.warn ul{margin:4px 0}
"""


def fmt(v: Any, digits: int = 3) -> str:
    """A number, or ``undefined`` (red) for ``None``/NaN; anything else escaped."""
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return '<span class="undef">undefined</span>'
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return html.escape(str(v))


def ci_cell(v: Any, ci: Any, reason: str | None = None, digits: int = 3) -> str:
    """``value [lower, upper]``; ``not estimable`` with the reason when the value or the interval is missing
    (never a zero-width or made-up interval)."""
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        why = f": {html.escape(reason)}" if reason else ""
        return f'<span class="undef">not estimable{why}</span>'
    if not ci or ci[0] is None or ci[1] is None:
        why = html.escape(reason) if reason else "interval not estimable"
        return f'{fmt(v, digits)} <span class="undef">[{why}]</span>'
    return f"{fmt(v, digits)} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def count_cell(num: Any, den: Any) -> str:
    """``num/den`` (the counts a proportion is made of)."""
    return f'<span class="n">{num}/{den}</span>'


def table(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    """A scrollable HTML table; the first ``left`` columns are left-aligned."""
    th = "".join(f'<th class="{"l" if i < left else ""}">{h}</th>' for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{c}</td>' for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f'<div class="scroll"><table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>'


def _pn(m: dict) -> str:
    return f"{m['positives']}+ / {m['negatives']}&minus;"


def headline_rows(metrics: dict) -> list[list[str]]:
    """The summary table: each headline figure says what it averages and which labels it leaves out."""
    names = metrics["label_names"]
    task = metrics["task"]
    mac = metrics["macro"]
    k = len(metrics.get("mean_auc_labels", []))
    mp = metrics.get("min_positives", 10)
    excluded = metrics.get("mean_auc_excluded") or {}
    left_out = ", ".join(f"{html.escape(n)} ({_pn(metrics['per_label'][n])})" for n in excluded) or "none"
    over = f"over {k} of {len(names)} labels with &ge;{mp} positive and &ge;{mp} negative test cases"
    rows = [[f"<b>mean AUC</b> {over}", ci_cell(metrics["mean_auc"], metrics["mean_auc_ci"],
                                                "no label has enough test cases" if not k else None)],
            [f"labels left out of the mean ({len(excluded)})", left_out],
            ["micro-averaged AUC (every known image-label pair pooled)",
             ci_cell(metrics.get("micro_auc"), metrics.get("micro_auc_ci"))],
            [f"mean average precision {over}", fmt(mac["average_precision"])],
            [f"mean sensitivity at the operating points {over}", fmt(mac["sensitivity"])],
            [f"mean specificity at the operating points {over}", fmt(mac["specificity"])],
            [f"mean F1 {over}", fmt(mac["f1"])],
            [f"expected calibration error (mean over the {len(names)} labels)", fmt(metrics["calibration"]["ece"])],
            [f"Brier score (mean over the {len(names)} labels)", fmt(metrics["calibration"].get("brier"))],
            ["accuracy" + (" (arg-max)" if task == "multiclass" else " (all known image-label pairs)"),
             fmt(metrics["accuracy"])],
            ["mean AUC over every label with a defined AUC, however few its cases (not a headline)",
             fmt(metrics.get("mean_auc_all_defined"))]]
    if task == "multiclass":
        mc = metrics["multiclass"]
        rows += [["balanced accuracy", fmt(mc["balanced_accuracy"])],
                 ["macro AUC (one-vs-rest, every class)", fmt(mc["macro_auc"])]]
    return rows


def warnings_html(metrics: dict) -> str:
    """A box listing thresholds that were not chosen on validation and labels whose AUC is not estimable."""
    items = []
    fb = metrics.get("threshold_fallbacks") or {}
    if fb:
        items.append(f"<li><b>{len(fb)} threshold(s) not chosen on validation</b> (too few validation cases): "
                     + "; ".join(f"{html.escape(n)}: {html.escape(r)}" for n, r in fb.items()) + "</li>")
    ex = metrics.get("mean_auc_excluded") or {}
    if ex:
        items.append(f"<li><b>{len(ex)} label(s) left out of the mean AUC</b>: "
                     + "; ".join(f"{html.escape(n)}: {html.escape(r)}" for n, r in ex.items()) + "</li>")
    short = [n for n, s in ((metrics.get("shortcuts") or {}).get("per_label") or {}).items() if s.get("flagged")]
    if short:
        items.append(f"<li><b>saliency mostly on the image border or burned-in text</b> for "
                     f"{', '.join(map(html.escape, short))} (see Shortcut check)</li>")
    if not items:
        return ""
    return f'<div class="warn"><b>Read with care</b><ul>{"".join(items)}</ul></div>'


def operating_point_rows(metrics: dict, op: dict) -> list[list[str]]:
    """One row per label: how the threshold was chosen, validation counts, test statistics with Wilson
    intervals and the counts behind each."""
    val = {c["label"]: c for c in op.get("labels", [])}
    rows = []
    for name in metrics["label_names"]:
        m, v = metrics["per_label"][name], val.get(name, {})
        method = v.get("method", "n/a")
        if v.get("target") is not None and method != "fixed":
            method += f" {v['target']:g}"
        by = m.get("threshold_chosen_by") or "n/a"
        by = f'<span class="undef">{html.escape(by)}</span>' if by == "fallback" else html.escape(by)
        notes = []
        if v.get("fallback"):
            notes.append(f"threshold: {v['fallback']}")
        elif v.get("undefined"):
            notes.append(f"validation: {v['undefined']}")
        ne = m.get("not_estimable") or {}
        notes += [f"{k}: {r}" for k, r in ne.items() if k.split("_ci")[0] in ("sensitivity", "specificity",
                                                                                 "ppv", "npv")]
        val_pn = f"{v['positives']}+ / {v['negatives']}&minus;" if "positives" in v else "n/a"
        rows.append([
            html.escape(name), html.escape(method), by, fmt(m["threshold"], 4), val_pn, fmt(v.get("sensitivity")),
            fmt(v.get("specificity")),
            ci_cell(m["sensitivity"], m.get("sensitivity_ci"), ne.get("sensitivity")) + "<br>"
            + count_cell(m["tp"], m["tp"] + m["fn"]),
            ci_cell(m["specificity"], m.get("specificity_ci"), ne.get("specificity")) + "<br>"
            + count_cell(m["tn"], m["tn"] + m["fp"]),
            ci_cell(m["ppv"], m.get("ppv_ci"), ne.get("ppv")) + "<br>" + count_cell(m["tp"], m["tp"] + m["fp"]),
            ci_cell(m["npv"], m.get("npv_ci"), ne.get("npv")) + "<br>" + count_cell(m["tn"], m["tn"] + m["fn"]),
            fmt(m["f1"]), f"{m['positives']} / {m['negatives']} / {m['unknown']}",
            f'<span class="undef">{html.escape("; ".join(notes))}</span>' if notes else ""])
    return rows


OPERATING_POINT_HEADER = ["label", "method", "chosen by", "threshold", "validation pos/neg", "val sens",
                          "val spec", "test sensitivity [95% CI]<br>TP/positives",
                          "test specificity [95% CI]<br>TN/negatives", "PPV [95% CI]<br>TP/decided positive",
                          "NPV [95% CI]<br>TN/decided negative", "F1", "test pos/neg/unknown", "notes"]


def _value_or_reason(v: Any, reason: str | None) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return ci_cell(None, None, reason)
    return fmt(v)


def per_label_rows(metrics: dict) -> list[list[str]]:
    """Discrimination and calibration per label, positives and negatives beside every figure."""
    rows = []
    included = set(metrics.get("mean_auc_labels", []))
    for name in metrics["label_names"]:
        m = metrics["per_label"][name]
        ne = m.get("not_estimable") or {}
        if m["auc"] is None:
            auc = ci_cell(None, None, ne.get("auc"))
        elif "auc" in ne:
            auc = (f'<span class="undef">not estimable: {html.escape(ne["auc"])}</span><br>'
                   f'<span class="n">observed {fmt(m["auc"])}, no interval</span>')
        else:
            auc = ci_cell(m["auc"], m["auc_ci"], ne.get("auc_ci"))
        rows.append([html.escape(name), _pn(m), auc, "yes" if name in included else "no",
                     fmt(m["average_precision"]), fmt(m["ece"]), fmt(m.get("brier")),
                     _value_or_reason(m.get("calibration_intercept"), ne.get("calibration_intercept")),
                     _value_or_reason(m.get("calibration_slope"), ne.get("calibration_slope"))])
    return rows


PER_LABEL_HEADER = ["label", "test pos/neg", "AUC [95% CI, DeLong]", "in mean AUC", "average precision", "ECE",
                    "Brier", "calibration intercept (0 ideal)", "calibration slope (1 ideal)"]

"""Compare two evaluations of the same test images (``medclass compare EVAL_A EVAL_B``).

Per label: both AUCs and their difference with DeLong's paired test, and McNemar's test of the two models'
decisions at their own stored thresholds (the ``pred_<label>`` columns of each ``predictions.csv``): exact
binomial with fewer than 25 discordant images, chi-square with continuity correction otherwise. Images are
matched by id; evaluations of different images, labels or label values are refused, naming what differs.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from medclass.files import atomic_json, atomic_write
from medclass.metrics import MIN_POSITIVES, delong_test, mcnemar_test, sparse_reason, to_json
from medclass.report.build import read_predictions

logger = logging.getLogger(__name__)

__all__ = ["COMPARE_COLUMNS", "compare_evaluations", "compare_figure", "format_table"]

COMPARE_COLUMNS = ["label", "positives", "negatives", "estimable", "auc_a", "auc_b", "auc_difference",
                   "difference_ci_lower", "difference_ci_upper", "delong_p", "threshold_a", "threshold_b",
                   "only_a_correct", "only_b_correct", "mcnemar_p", "mcnemar_method", "note"]


def _examples(values, k: int = 5) -> str:
    v = sorted(values)
    return ", ".join(map(repr, v[:k])) + (f" and {len(v) - k} more" if len(v) > k else "")


def _load(folder: Path) -> dict[str, Any]:
    pred = read_predictions(folder / "predictions.csv")
    if pred["labels"] is None:
        raise ValueError(f"{folder / 'predictions.csv'}: no label_<label> columns; a comparison needs labels")
    if pred["decisions"] is None:
        raise ValueError(f"{folder / 'predictions.csv'}: no pred_<label> columns (the decisions at the stored "
                         "thresholds)")
    ids = pred["ids"]
    if len(set(ids)) != len(ids):
        dup = {i for i in ids if ids.count(i) > 1}
        raise ValueError(f"{folder / 'predictions.csv'}: repeated image ids {_examples(dup)}")
    op = {}
    if (folder / "thresholds.json").exists():
        op = {c["label"]: c.get("threshold") for c in json.loads((folder / "thresholds.json").read_text())
              .get("labels", [])}
    pred["thresholds"] = op
    return pred


def _align(a: dict, b: dict, name_a: str, name_b: str) -> np.ndarray:
    """Row order of ``b`` matching ``a``'s ids; refuses anything that differs, saying what."""
    if a["label_names"] != b["label_names"]:
        only_a = set(a["label_names"]) - set(b["label_names"])
        only_b = set(b["label_names"]) - set(a["label_names"])
        what = (f"labels only in {name_a}: {sorted(only_a)}; only in {name_b}: {sorted(only_b)}" if only_a or only_b
                else f"the same labels in another order ({a['label_names']} vs {b['label_names']})")
        raise ValueError(f"{name_a} and {name_b} evaluate different labels: {what}")
    ia, ib = set(a["ids"]), set(b["ids"])
    if ia != ib:
        parts = []
        if ia - ib:
            parts.append(f"{len(ia - ib)} image(s) only in {name_a} ({_examples(ia - ib)})")
        if ib - ia:
            parts.append(f"{len(ib - ia)} image(s) only in {name_b} ({_examples(ib - ia)})")
        raise ValueError(f"{name_a} and {name_b} are not evaluations of the same test images: " + "; ".join(parts))
    pos = {i: k for k, i in enumerate(b["ids"])}
    order = np.array([pos[i] for i in a["ids"]])
    ya, yb = a["labels"], b["labels"][order]
    differ = ~((ya == yb) | (np.isnan(ya) & np.isnan(yb)))
    if differ.any():
        rows, cols = np.nonzero(differ)
        where = [f"{a['ids'][r]}/{a['label_names'][c]}" for r, c in zip(rows[:5], cols[:5])]
        raise ValueError(f"{name_a} and {name_b} give {int(differ.sum())} different label value(s) for the same "
                         f"images (e.g. {', '.join(where)})")
    return order


def compare_evaluations(eval_a: str | os.PathLike, eval_b: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                        min_positives: int = MIN_POSITIVES, level: float = 0.95) -> dict[str, Any]:
    """Compare two evaluation folders of the same test images; write ``compare.csv``, ``compare.json`` and
    ``compare.png`` into ``out_dir`` (when given).

    Args:
        eval_a: evaluation folder of model A (``predictions.csv`` with labels and decisions).
        eval_b: evaluation folder of model B.
        out_dir: where the files go (``None``: nothing written).
        min_positives: positives and negatives a label needs for its comparison to count as estimable.
        level: interval coverage.

    Returns:
        ``{"a", "b", "n", "min_positives", "per_label": [row per label with COMPARE_COLUMNS keys]}``.

    Raises:
        ValueError: different images, labels or label values (named), or a folder without labels/decisions.
    """
    fa, fb = Path(eval_a), Path(eval_b)
    a, b = _load(fa), _load(fb)
    order = _align(a, b, str(fa), str(fb))
    y, pa, pb = a["labels"], a["probs"], b["probs"][order]
    da, db = a["decisions"], b["decisions"][order]
    rows = []
    for k, name in enumerate(a["label_names"]):
        col = y[:, k]
        known = ~np.isnan(col)
        pos, neg = int((col == 1).sum()), int((col == 0).sum())
        d = delong_test(col, pa[:, k], pb[:, k], level)
        truth = col[known] == 1
        m = mcnemar_test((da[known, k] >= 0.5) == truth, (db[known, k] >= 0.5) == truth)
        sparse = sparse_reason(pos, neg, min_positives)
        rows.append({"label": name, "positives": pos, "negatives": neg, "estimable": sparse is None,
                     "auc_a": d["auc_a"], "auc_b": d["auc_b"], "auc_difference": d["difference"],
                     "difference_ci_lower": d["lower"], "difference_ci_upper": d["upper"], "delong_p": d["p_value"],
                     "threshold_a": a["thresholds"].get(name), "threshold_b": b["thresholds"].get(name),
                     "only_a_correct": m["only_a"], "only_b_correct": m["only_b"], "mcnemar_p": m["p_value"],
                     "mcnemar_method": m["method"],
                     "note": "; ".join(x for x in (sparse, d.get("not_estimable"), d.get("identical")) if x) or None})
    out = {"a": str(fa), "b": str(fb), "n": len(a["ids"]), "min_positives": int(min_positives), "level": level,
           "difference": "AUC of A minus AUC of B", "per_label": rows}
    if out_dir is not None:
        od = Path(out_dir)
        od.mkdir(parents=True, exist_ok=True)
        _write_csv(od / "compare.csv", rows)
        atomic_json(od / "compare.json", to_json(out), allow_nan=False)
        with atomic_write(od / "compare.png", "wb") as f:
            f.write(compare_figure(out))
        logger.info("comparison written to %s", od)
    return out


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _write_csv(path: Path, rows: list[dict]) -> None:
    with atomic_write(path, newline="") as f:
        w = csv.writer(f)
        w.writerow(COMPARE_COLUMNS)
        for r in rows:
            w.writerow([_cell(r[c]) for c in COMPARE_COLUMNS])


def format_table(result: dict[str, Any]) -> str:
    """The comparison as a fixed-width text table (what ``medclass compare`` prints)."""
    head = f"{'label':<20} {'pos/neg':>9} {'AUC A':>6} {'AUC B':>6} {'A-B [95% CI]':>22} {'DeLong p':>8} " \
           f"{'A only/B only right':>19} {'McNemar p':>9}  note"
    lines = [f"A: {result['a']}", f"B: {result['b']}", f"{result['n']} images", head]

    def f(v, d=3):
        return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{d}f}"

    for r in result["per_label"]:
        ci = f"{f(r['auc_difference'])} [{f(r['difference_ci_lower'])}, {f(r['difference_ci_upper'])}]"
        lines.append(f"{r['label'][:20]:<20} {str(r['positives']) + '/' + str(r['negatives']):>9} "
                     f"{f(r['auc_a']):>6} {f(r['auc_b']):>6} {ci:>22} {f(r['delong_p']):>8} "
                     f"{str(r['only_a_correct']) + '/' + str(r['only_b_correct']):>19} {f(r['mcnemar_p']):>9}  "
                     f"{r['note'] or ''}")
    return "\n".join(lines)


def compare_figure(result: dict[str, Any]) -> bytes:
    """Forest plot of the per-label AUC differences (A - B) with their DeLong intervals; labels with too few
    cases are drawn hollow and grey, labels without an estimate are named on the right."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    import io

    rows = result["per_label"]
    fig = Figure(figsize=(7.5, 0.38 * len(rows) + 1.6))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for k, r in enumerate(rows):
        yk = len(rows) - 1 - k
        d = r["auc_difference"]
        if d is None or not math.isfinite(d):
            ax.text(0.0, yk, "not estimable", va="center", ha="center", fontsize=7, c="tab:red")
            continue
        lo, hi = r["difference_ci_lower"], r["difference_ci_upper"]
        c = "tab:blue" if r["estimable"] else "0.6"
        if lo is not None and math.isfinite(lo):
            ax.plot([lo, hi], [yk, yk], c=c, lw=1.6)
        ax.plot([d], [yk], "o", ms=6, mec=c, mfc=c if r["estimable"] else "white")
    ax.axvline(0, c="0.3", lw=1, ls=":")
    ax.set_yticks(range(len(rows)), [f"{r['label']} ({r['positives']}+/{r['negatives']}-)" for r in rows][::-1],
                  fontsize=8)
    ax.set_xlabel("AUC difference, A minus B (95% DeLong interval)")
    ax.set_title(f"{Path(result['a']).name} vs {Path(result['b']).name}: {result['n']} images; hollow grey: "
                 f"fewer than {result['min_positives']} positives or negatives", fontsize=8)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96)
    return buf.getvalue()

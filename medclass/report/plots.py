"""Report figures as PNG bytes, drawn with matplotlib's Agg canvas (no display, no global pyplot state)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from medclass.metrics import binary_stats, precision_recall_curve, proportion_ci, roc_curve

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _figure(**kwargs: Any) -> Figure:
    """A matplotlib figure without pyplot (matplotlib is imported when a report is drawn, not with medclass)."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _png(fig: Figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    return buf.getvalue()


def new_figure(**kwargs: Any) -> Figure:
    """A matplotlib figure without pyplot, for report figures drawn elsewhere (:func:`png` turns it into bytes)."""
    return _figure(**kwargs)


def png(fig: Figure) -> bytes:
    """A figure as PNG bytes (96 dpi, tight bounding box)."""
    return _png(fig)


def _fmt(v: Any, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def roc_pr_figure(label: str, labels, probs, threshold: float | None, auc: float | None, ap: float | None,
                  undefined: str | None = None) -> bytes:
    """ROC and precision-recall curves of one label side by side, the operating point marked on both."""
    fig = _figure(figsize=(8.4, 3.9))
    ax_roc, ax_pr = fig.subplots(1, 2)
    fpr, tpr, _ = roc_curve(labels, probs)
    prec, rec, _ = precision_recall_curve(labels, probs)
    ax_roc.plot([0, 1], [0, 1], ls=":", c="0.6", lw=1)
    if len(fpr):
        ax_roc.plot(fpr, tpr, c="tab:blue", lw=1.8, label=f"AUC {_fmt(auc)}")
    if len(rec):
        ax_pr.plot(np.r_[0.0, rec], np.r_[prec[0], prec], c="tab:green", lw=1.8, drawstyle="steps-post",
                   label=f"AP {_fmt(ap)}")
        y = np.asarray(labels, dtype=float)
        prevalence = np.nanmean(y)
        ax_pr.axhline(prevalence, ls=":", c="0.6", lw=1, label=f"prevalence {prevalence:.2f}")
    if threshold is not None and len(fpr):
        s = binary_stats(labels, np.asarray(probs) >= threshold)
        ax_roc.plot([1 - s["specificity"]], [s["sensitivity"]], "o", ms=8, mfc="tab:red", mec="k",
                    label=f"t={threshold:.3f}: Se {_fmt(s['sensitivity'], 2)}, Sp {_fmt(s['specificity'], 2)}")
        if not math.isnan(s["ppv"]):
            ax_pr.plot([s["sensitivity"]], [s["ppv"]], "o", ms=8, mfc="tab:red", mec="k",
                       label=f"t={threshold:.3f}: PPV {_fmt(s['ppv'], 2)}")
    if undefined:
        for ax in (ax_roc, ax_pr):
            ax.text(0.5, 0.5, undefined, ha="center", va="center", transform=ax.transAxes, fontsize=10, c="tab:red")
    ax_roc.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="1 - specificity", ylabel="sensitivity", title=f"{label}: ROC")
    ax_pr.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall (sensitivity)", ylabel="precision (PPV)",
              title=f"{label}: precision-recall")
    for ax in (ax_roc, ax_pr):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right" if ax is ax_roc else "lower left", fontsize=8)
    return _png(fig)


def reliability_figure(curves: dict[str, dict], title: str = "Reliability diagram") -> bytes:
    """Observed frequency against mean predicted probability per bin for each curve, with bin counts below."""
    fig = _figure(figsize=(6.4, 6.0))
    ax, ax_n = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], ls=":", c="0.5", lw=1, label="perfect calibration")
    width = 1.0 / max(1, len(curves) + 1) / 10
    for k, (name, r) in enumerate(curves.items()):
        if not r.get("count"):
            continue
        line = ax.plot(r["confidence"], r["frequency"], "o-", lw=1.5, ms=4, label=f"{name} (ECE {_fmt(r['ece'])})")
        centers = (np.asarray(r["lower"]) + np.asarray(r["upper"])) / 2 + (k - len(curves) / 2) * width
        ax_n.bar(centers, r["count"], width=width, color=line[0].get_color())
    ax.set(xlim=(0, 1), ylim=(-0.03, 1.03), ylabel="observed frequency", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", ncol=1 if len(curves) < 8 else 2)
    ax_n.set(xlabel="predicted probability", ylabel="images")
    ax_n.grid(alpha=0.3)
    return _png(fig)


def reliability_grid(curves: dict[str, dict], title: str = "Reliability") -> bytes:
    """One reliability panel per label: observed frequency (with a Wilson 95% interval) against the mean
    predicted probability of each bin, the bin's image count written beside its point, and the ECE, so a point
    resting on two images reads as such."""
    names = list(curves)
    cols = min(4, max(1, len(names)))
    rows = math.ceil(len(names) / cols)
    fig = _figure(figsize=(3.2 * cols, 3.1 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, name in zip(axes, names):
        r = curves[name]
        ax.plot([0, 1], [0, 1], ls=":", c="0.5", lw=1)
        conf, freq, count = (np.asarray(r.get(k) or [], dtype=float) for k in ("confidence", "frequency", "count"))
        if count.size:
            lo, hi = [], []
            for f, n in zip(freq, count):
                ci = proportion_ci(int(round(f * n)), int(n))
                lo.append(f - ci["lower"])
                hi.append(ci["upper"] - f)
            ax.errorbar(conf, freq, yerr=[lo, hi], fmt="o-", ms=4, lw=1.2, capsize=2, c="tab:blue")
            for x, f, n in zip(conf, freq, count):
                ax.annotate(f"{int(n)}", (x, f), textcoords="offset points", xytext=(4, 4), fontsize=7, c="0.3")
        else:
            ax.text(0.5, 0.5, "no known labels", ha="center", va="center", transform=ax.transAxes, c="tab:red")
        ax.set(xlim=(0, 1), ylim=(-0.03, 1.03), title=f"{name} (ECE {_fmt(r.get('ece'))}, n {r.get('n', 0)})")
        ax.title.set_fontsize(8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(names):]:
        ax.axis("off")
    fig.suptitle(f"{title}: observed frequency vs predicted probability (numbers: images per bin)", fontsize=9)
    fig.tight_layout()
    return _png(fig)


def confusion_figure(matrix, names: Sequence[str], title: str = "Confusion matrix") -> bytes:
    """A ``(K, K)`` confusion matrix (rows: labelled class, columns: predicted) with counts in the cells."""
    cm = np.asarray(matrix, dtype=float)
    k = len(names)
    fig = _figure(figsize=(1.1 * k + 2.6, 1.0 * k + 2.0))
    ax = fig.subplots()
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", c="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), list(names), rotation=45, ha="right")
    ax.set_yticks(range(k), list(names))
    ax.set(xlabel="predicted", ylabel="labelled", title=title)
    return _png(fig)


def label_confusions_figure(per_label: dict[str, dict]) -> bytes:
    """One 2x2 confusion matrix per label (multi-label/binary) at its operating point."""
    names = list(per_label)
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig = _figure(figsize=(2.7 * cols, 2.6 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, name in zip(axes, names):
        m = per_label[name]
        cm = np.array([[m["tn"], m["fp"]], [m["fn"], m["tp"]]], dtype=float)
        rs = cm.sum(axis=1, keepdims=True)
        share = np.divide(cm, rs, out=np.zeros_like(cm), where=rs > 0)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for i in range(2):
            for j in range(2):
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center",
                        c="white" if share[i, j] > 0.5 else "black")
        ax.set_xticks([0, 1], ["pred 0", "pred 1"])
        ax.set_yticks([0, 1], ["true 0", "true 1"])
        thr = m.get("threshold")
        ax.set_title(f"{name}" + (f" (t={thr:.3f})" if thr is not None else ""), fontsize=9)
    for ax in axes[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    return _png(fig)

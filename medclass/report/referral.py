"""The report's uncertainty section: the referral curve and the cases to look at first.

Where ``predictions.csv`` has ``uncertainty_<label>`` columns (an ensemble, test-time augmentation or MC-dropout,
:class:`medclass.inferers.PredictionInferer`), :func:`referral_summary` adds ``referral`` to ``metrics.json``: the mean
AUC and accuracy of the retained cases as the most uncertain 0-50% are referred
(:func:`medclass.metrics.referral.referral_curve`), and the most uncertain cases by their row in ``predictions.csv``.
:func:`write_referral_csv` writes every case ranked by uncertainty to ``referral.csv`` beside it (its ``id`` column is
``predictions.csv``'s); the HTML page names cases by row number only.
"""

from __future__ import annotations

import csv
import html
from pathlib import Path
from typing import Any

import numpy as np

from medclass.files import atomic_write
from medclass.metrics.referral import referral_curve
from medclass.report import plots
from medclass.report.tables import fmt, table

__all__ = ["LOOK_FIRST", "REFERRAL_FILE", "referral_figure", "referral_html", "referral_summary",
           "write_referral_csv"]

#: every evaluated case ranked by uncertainty, most uncertain first
REFERRAL_FILE = "referral.csv"
#: the most uncertain cases the report lists
LOOK_FIRST = 10


def referral_summary(pred: dict[str, Any], thresholds, task: str) -> dict[str, Any]:
    """``metrics.json``'s ``referral`` entry from :func:`medclass.report.read_predictions`' arrays."""
    curve = referral_curve(pred["labels"], pred["probs"], pred["uncertainty"], thresholds, task)
    order, score = curve.pop("order"), curve.pop("score")
    curve["look_first"] = [{"rank": r + 1, "row": int(i) + 1, "uncertainty": score[i]}
                           for r, i in enumerate(order[:LOOK_FIRST])]
    curve["case_score"] = "largest uncertainty_<label> of the case (std of the averaged probabilities)"
    return curve


def write_referral_csv(path: Path, pred: dict[str, Any]) -> Path:
    """Every case, most uncertain first: ``rank, row, id, uncertainty`` and its ``prob_`` / ``uncertainty_`` /
    ``label_`` values (``row``: the row of ``predictions.csv``, header excluded)."""
    names = pred["label_names"]
    u = np.asarray(pred["uncertainty"], dtype=float)
    score = np.where(np.isnan(u), -np.inf, u).max(axis=1)
    order = np.argsort(-score, kind="stable")
    labels = pred.get("labels")
    with atomic_write(path, newline="") as f:
        w = csv.writer(f)
        w.writerow(["rank", "row", "id", "uncertainty", *(f"prob_{n}" for n in names),
                    *(f"uncertainty_{n}" for n in names), *((f"label_{n}" for n in names) if labels is not None else ())])
        for rank, i in enumerate(order, 1):
            row = [rank, int(i) + 1, pred["ids"][i], f"{max(score[i], 0.0):.6f}"]
            row += [f"{v:.6f}" for v in pred["probs"][i]] + [f"{v:.6f}" for v in u[i]]
            if labels is not None:
                row += ["" if np.isnan(v) else int(v) for v in labels[i]]
            w.writerow(row)
    return path


def referral_figure(referral: dict[str, Any]) -> bytes:
    """Mean AUC and accuracy of the retained cases against the share of the most uncertain cases referred."""
    fig = plots.new_figure(figsize=(6.0, 4.0))
    ax = fig.subplots()
    x = [100 * f for f in referral["fractions"]]
    for key, name in (("mean_auc", "mean AUC"), ("accuracy", "accuracy")):
        ax.plot(x, [np.nan if v is None else v for v in referral[key]], "o-", ms=4, label=f"{name} of retained cases")
    ax.set(xlabel="most uncertain cases referred (%)", ylabel="retained cases", title="Referral curve")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return plots.png(fig)


def referral_html(referral: dict[str, Any], img: str) -> str:
    """The report section: the curve (``img``: its ``<img>`` tag), its table and the cases to look at first."""
    rows = [[f"{100 * f:.0f}%", str(k), str(n), fmt(a), fmt(c)] for f, k, n, a, c in
            zip(referral["fractions"], referral["referred"], referral["retained"], referral["mean_auc"],
                referral["accuracy"])]
    first = [[str(c["rank"]), str(c["row"]), fmt(c["uncertainty"], 4)] for c in referral["look_first"]]
    return ("<h2>Uncertainty and referral</h2>"
            '<p class="note">Each case\'s uncertainty is the largest spread (standard deviation) of the probabilities '
            "averaged for it (ensemble members, test-time augmentations or MC-dropout samples). Referring the most "
            "uncertain cases to a reader should raise the AUC and accuracy of the cases the model keeps; a flat "
            "curve means the uncertainty does not find the model's mistakes.</p>"
            f"<figure>{img}</figure>"
            + table(["referred", "cases referred", "cases retained", "mean AUC (retained)", "accuracy (retained)"],
                    rows)
            + f"<h3>Cases to look at first</h3><p class=\"note\">The {len(first)} most uncertain cases by their row "
            f"in predictions.csv; {html.escape(REFERRAL_FILE)} ranks every case with its id.</p>"
            + table(["rank", "row of predictions.csv", "uncertainty"], first))

"""Subgroup results: the metrics of each value of a datalist column (sex, age band, view, site), with counts."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medclass.metrics.classification import binary_auc
from medclass.metrics.operating_points import binary_stats

MISSING = "(missing)"


def age_bands(values: Sequence[Any], edges: Sequence[float]) -> list[str]:
    """Band labels such as ``40-59`` for numeric values (``<edge0``/``>=edgeN`` outside, ``(missing)`` for
    empty or non-numeric cells). ``edges`` are increasing band starts, e.g. ``[0, 40, 60, 80]``."""
    e = [float(x) for x in edges]
    if len(e) < 2 or any(b <= a for a, b in zip(e, e[1:])):
        raise ValueError(f"band edges must be two or more increasing numbers, got {list(edges)}")
    out = []
    for v in values:
        try:
            x = float(v)
        except (TypeError, ValueError):
            out.append(MISSING)
            continue
        if math.isnan(x):
            out.append(MISSING)
        elif x < e[0]:
            out.append(f"<{e[0]:g}")
        elif x >= e[-1]:
            out.append(f">={e[-1]:g}")
        else:
            k = int(np.searchsorted(e, x, side="right")) - 1
            out.append(f"{e[k]:g}-{e[k + 1]:g}")
    return out


def group_values(values: Sequence[Any], bins: Sequence[float] | None = None) -> list[str]:
    """Subgroup label per row: the cell as text (``(missing)`` when empty), or its band with ``bins``."""
    if bins is not None:
        return age_bands(values, bins)
    out = []
    for v in values:
        text = "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v).strip()
        out.append(text or MISSING)
    return out


def _sort_key(value: str):
    head = value.lstrip("<>=").split("-")[0]
    try:
        return (0, float(head), value)
    except ValueError:
        return (1 if value != MISSING else 2, 0.0, value)


def subgroup_metrics(labels, probs, decisions, label_names: Sequence[str], groups: Mapping[str, Sequence[str]],
                     min_count: int = 1) -> list[dict[str, Any]]:
    """Per-subgroup counts, AUC, sensitivity and specificity for every label.

    Args:
        labels: ``(N, C)`` 1/0/NaN.
        probs: ``(N, C)`` probabilities.
        decisions: ``(N, C)`` 0/1 decisions at the operating points.
        label_names: the ``C`` names.
        groups: ``{column: subgroup label per row}`` (see :func:`group_values`).
        min_count: subgroups with fewer rows are left out.

    Returns:
        One row per (column, value): ``{"column", "value", "n", "mean_auc", "per_label": {name: {"auc",
        "sensitivity", "specificity", "positives", "negatives"}}}``; undefined values are ``nan``.
    """
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    d = np.asarray(decisions, dtype=np.float64)
    rows = []
    for column, values in groups.items():
        values = np.asarray([str(v) for v in values], dtype=object)
        if len(values) != len(y):
            raise ValueError(f"subgroup column {column!r} has {len(values)} values for {len(y)} rows")
        for value in sorted(set(values.tolist()), key=_sort_key):
            m = values == value
            if int(m.sum()) < min_count:
                continue
            per_label = {}
            aucs = []
            for c, name in enumerate(label_names):
                col = y[m, c]
                auc = binary_auc(col, p[m, c])
                stats = binary_stats(col, d[m, c])
                per_label[name] = {"auc": auc, "sensitivity": stats["sensitivity"],
                                   "specificity": stats["specificity"], "positives": int((col == 1).sum()),
                                   "negatives": int((col == 0).sum())}
                if not math.isnan(auc):
                    aucs.append(auc)
            rows.append({"column": str(column), "value": str(value), "n": int(m.sum()),
                         "mean_auc": float(np.mean(aucs)) if aucs else math.nan, "per_label": per_label})
    return rows

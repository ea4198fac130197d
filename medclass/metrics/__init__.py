"""Pure classification metrics on arrays: NaN labels are unknown and excluded per label."""

from medclass.metrics.classification import (
    accuracy_at,
    binary_auc,
    decisions,
    mean_auc,
    per_label_auc,
    summarize,
)

__all__ = ["binary_auc", "per_label_auc", "mean_auc", "accuracy_at", "decisions", "summarize"]

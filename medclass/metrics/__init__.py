"""Pure classification metrics on arrays: NaN labels are unknown and excluded per label.

- :mod:`~medclass.metrics.classification`: AUC, decisions, accuracy.
- :mod:`~medclass.metrics.operating_points`: ROC/PR curves, average precision, thresholds chosen on validation
  data (Youden, target sensitivity/specificity, fixed) and sensitivity/specificity/PPV/NPV/F1 at them.
- :mod:`~medclass.metrics.calibration`: reliability bins, ECE, Brier score, calibration intercept and slope,
  temperature scaling.
- :mod:`~medclass.metrics.intervals`: Wilson / exact intervals for proportions, DeLong's AUC interval and
  paired test, McNemar's test.
- :mod:`~medclass.metrics.bootstrap`: percentile intervals resampling patients.
- :mod:`~medclass.metrics.subgroups`: results per datalist column value.
- :mod:`~medclass.metrics.multiclass`: confusion matrix, balanced accuracy, macro/micro AUC.
- :mod:`~medclass.metrics.evaluation`: all of it in one JSON-ready summary.
"""

from medclass.metrics.bootstrap import bootstrap_ci, cluster_index
from medclass.metrics.calibration import (
    brier_score,
    calibration_fit,
    expected_calibration_error,
    fit_temperature,
    probabilities,
    reliability,
    top_label,
)
from medclass.metrics.classification import (
    accuracy_at,
    binary_auc,
    decisions,
    mean_auc,
    per_label_auc,
    summarize,
)
from medclass.metrics.evaluation import evaluate_predictions, label_metrics, sparse_reason, to_json
from medclass.metrics.intervals import delong_ci, delong_covariance, delong_test, mcnemar_test, proportion_ci
from medclass.metrics.multiclass import balanced_accuracy, confusion_matrix, macro_auc, micro_auc, per_class_accuracy
from medclass.metrics.operating_points import (
    MIN_POSITIVES,
    average_precision,
    binary_stats,
    choose_threshold,
    choose_thresholds,
    fallback_threshold,
    operating_point_specs,
    parse_method,
    precision_recall_curve,
    roc_curve,
)
from medclass.metrics.subgroups import age_bands, group_values, subgroup_metrics

__all__ = [
    "MIN_POSITIVES", "accuracy_at", "age_bands", "average_precision", "balanced_accuracy", "binary_auc",
    "binary_stats", "bootstrap_ci", "brier_score", "calibration_fit", "choose_threshold", "choose_thresholds",
    "cluster_index", "confusion_matrix", "decisions", "delong_ci", "delong_covariance", "delong_test",
    "evaluate_predictions", "expected_calibration_error", "fallback_threshold", "fit_temperature",
    "group_values", "label_metrics", "macro_auc", "mcnemar_test", "mean_auc", "micro_auc",
    "operating_point_specs", "parse_method", "per_class_accuracy", "per_label_auc", "precision_recall_curve",
    "probabilities", "proportion_ci", "reliability", "roc_curve", "sparse_reason", "subgroup_metrics",
    "summarize", "to_json", "top_label",
]

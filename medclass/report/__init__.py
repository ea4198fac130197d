"""The evaluation report: ``metrics.json``, ``per_label.csv``, PNG plots and one self-contained HTML page, all
rebuilt from the files of an evaluation folder (``medclass report <folder>``).

An evaluation folder holds ``predictions.csv`` (``id``, DICOM UIDs, ``prob_<label>``, ``threshold_<label>``,
``pred_<label>``, ``label_<label>``, optionally ``patient`` and ``group_<column>``), ``thresholds.json`` (the
operating points chosen on the validation split), ``model.json`` / ``data.json`` (the model and the development
data's counts, written by the evaluate workflow) and, when saliency maps were made, PNGs under ``saliency/``.

Modules: :mod:`~medclass.report.build` (:func:`build_report`, reading and annotating predictions),
:mod:`~medclass.report.html` and :mod:`~medclass.report.plots` (the page), :mod:`~medclass.report.tables`,
:mod:`~medclass.report.external` (external validation), :mod:`~medclass.report.shortcuts` (the saliency shortcut
check), :mod:`~medclass.report.compare` (two models on the same images), :mod:`~medclass.report.card` (the model
card).
"""

from __future__ import annotations

from medclass.report.build import (
    PER_LABEL_COLUMNS,
    annotate_predictions,
    build_report,
    check_subgroups,
    read_predictions,
    subgroup_specs,
)
from medclass.report.external import EXTERNAL_FILE
from medclass.report.html import PLOTS_DIR, REPORT_FILE
from medclass.report.shortcuts import SHORTCUTS_FILE

__all__ = [
    "EXTERNAL_FILE", "PER_LABEL_COLUMNS", "PLOTS_DIR", "REPORT_FILE", "SHORTCUTS_FILE", "annotate_predictions",
    "build_report", "check_subgroups", "read_predictions", "subgroup_specs",
]

"""CSV/TSV label files of any layout: one 1/0/-1/blank column per label, a findings column (ChestX-ray14, see
:mod:`medclass.data.sources.nih`) or a class column, chosen from the header and the options."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from medclass.data.labels import CXR14_LABELS, normalize_name
from medclass.data.records import check_optional_task, default_task, infer_classes, is_mask_key
from medclass.data.sources.nih import FINDINGS_COLUMNS, findings_layout
from medclass.data.sources.table import ClassColumn, LabelColumns, LabelLayout, TableSource

__all__ = ["CLASS_COLUMNS", "CsvSource"]

#: Columns that may hold a class name or index (multiclass), unless ``class_key`` names one.
CLASS_COLUMNS: tuple[str, ...] = ("label", "class")


class CsvSource(TableSource):
    """A CSV/TSV label file, one row per image.

    Labels: with ``label_names``, one 1/0/-1/blank column per name; else (or with ``findings_key``) the findings
    column holding ``|``-separated names, ``No Finding`` = all 0; else (or with ``class_key``) a class column
    (``label``/``class``) holding class names or indices (multiclass). Without ``label_names``: the 14
    ChestX-ray14 columns if all present, else the findings column (ChestX-ray14 labels), else the columns ``X`` that
    have a ``mask_X`` companion (phantoms), else the class column. See :class:`TableSource` for the other columns.
    """

    def layout(self, keys: Mapping[str, int], label_names: Sequence[str] | None, task: str | None) -> LabelLayout:
        table = self.table()
        source, header, options = self.source, table.header, self.options
        findings_col = self.column(keys, "findings_key", FINDINGS_COLUMNS)
        class_col = self.column(keys, "class_key", CLASS_COLUMNS)
        label_cols: list[int] = []
        if label_names is not None:
            names = [str(n) for n in label_names]
            if not names:
                raise ValueError(f"{source}: label_names is empty")
            cols = [keys.get(normalize_name(n)) for n in names]
            if options.get("findings_key") is None and options.get("class_key") is None and all(
                c is not None for c in cols
            ):
                mode, label_cols = "columns", [c for c in cols if c is not None]
            elif findings_col is not None and options.get("class_key") is None:
                mode = "findings"
            elif class_col is not None:
                mode = "class"
            else:
                missing = [n for n, c in zip(names, cols) if c is None]
                raise ValueError(
                    f"{source}: label names {missing} are not columns of the CSV, and it has no findings column "
                    f"({', '.join(repr(c) for c in FINDINGS_COLUMNS)}); columns present: {table.present()}"
                )
        else:
            paired = [
                h for h in header if h and not is_mask_key(h) and f"mask_{h}" in header and normalize_name(h) in keys
            ]
            cxr_cols = [keys.get(normalize_name(n)) for n in CXR14_LABELS]
            if options.get("findings_key") is not None:
                mode, names = "findings", list(CXR14_LABELS)
            elif options.get("class_key") is not None:
                mode, names = "class", []
            elif all(c is not None for c in cxr_cols):
                mode, names, label_cols = "columns", list(CXR14_LABELS), [c for c in cxr_cols if c is not None]
            elif findings_col is not None:
                mode, names = "findings", list(CXR14_LABELS)
            elif paired:
                mode, names, label_cols = "columns", paired, [keys[normalize_name(h)] for h in paired]
            elif class_col is not None:
                mode, names = "class", []
            else:
                raise ValueError(
                    f"{source}: cannot tell which columns hold the labels (no ChestX-ray14 columns, no findings "
                    f"column, no 'label'/'class' column); pass label_names=[...]; columns present: {table.present()}"
                )

        if mode == "findings":
            return findings_layout(self, findings_col, names, task)
        check_optional_task(task, source)
        if mode == "class":
            if not names:
                names, task_inferred = infer_classes([r[class_col] for _, r in table.rows], task, source)
                task = task or task_inferred
            task = task or ("binary" if len(names) == 1 else "multiclass")
        elif task is None:
            task = default_task(len(names))
        if task == "binary" and len(names) != 1:
            raise ValueError(f"{source}: task 'binary' takes one label, got {len(names)}: {names}")
        if mode == "class":
            return ClassColumn(names, task, header, (class_col,), column=class_col, source=source)
        return LabelColumns(names, task, header, tuple(label_cols))

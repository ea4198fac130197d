"""NIH ChestX-ray14 style label CSVs (``Data_Entry_2017.csv``): the labels are one ``|``-separated findings column
(``Finding Labels``; ``No Finding`` = all 0) over the 14 ChestX-ray14 findings, beside ``Image Index`` and
``Patient ID``.

:class:`NihCsvSource` reads such a file; the generic CSV source (:mod:`medclass.data.sources.csvfile`) uses the
same :class:`FindingsColumn` when a CSV has a findings column and no column per label.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from medclass.data.labels import CXR14_LABELS, NO_FINDING, FindingsParser
from medclass.data.records import check_optional_task, default_task
from medclass.data.sources.table import LabelLayout, TableSource

__all__ = ["FINDINGS_COLUMNS", "FindingsColumn", "NihCsvSource", "findings_layout"]

#: Columns that may hold ``|``-separated findings (the first present, unless ``findings_key`` names one).
FINDINGS_COLUMNS: tuple[str, ...] = ("Finding Labels", "finding_labels", "findings")


@dataclass
class FindingsColumn(LabelLayout):
    """Labels from a findings column: each row's findings string (``"Effusion|Mass"``) parsed into the vector of
    ``names`` (:class:`~medclass.data.labels.FindingsParser`). The column itself stays in the items."""

    column: int = -1
    no_finding: str = NO_FINDING
    sep: str = "|"

    def __post_init__(self) -> None:
        self.parser = FindingsParser(self.names, no_finding=self.no_finding, sep=self.sep)

    def label(self, row: Sequence[str], where: str) -> np.ndarray:
        return self.parser(row[self.column], f"{where}, column {self.header[self.column]!r}")


def findings_layout(source: TableSource, column: int, label_names: Sequence[str] | None,
                    task: str | None) -> FindingsColumn:
    """The findings layout of ``source``'s ``column``: ``label_names`` (default the 14 ChestX-ray14 findings),
    multi-label unless ``task`` says otherwise (``no_finding`` / ``sep`` options of the source apply).

    Raises:
        ValueError: an unknown task, or task ``binary`` with more than one label.
    """
    names = [str(n) for n in label_names] if label_names is not None else list(CXR14_LABELS)
    check_optional_task(task, source.source)
    task = task or default_task(len(names))
    if task == "binary" and len(names) != 1:
        raise ValueError(f"{source.source}: task 'binary' takes one label, got {len(names)}: {names}")
    return FindingsColumn(names, task, source.table().header, (), column=column,
                          no_finding=source.options.get("no_finding", NO_FINDING), sep=source.options.get("sep", "|"))


class NihCsvSource(TableSource):
    """A ChestX-ray14 style CSV: the labels always come from the findings column (``findings_key``, default the
    first of :data:`FINDINGS_COLUMNS` present)."""

    kind = "NIH ChestX-ray14 CSV"

    def layout(self, keys: Mapping[str, int], label_names: Sequence[str] | None, task: str | None) -> LabelLayout:
        if label_names is not None and not list(label_names):
            raise ValueError(f"{self.source}: label_names is empty")
        column = self.column(keys, "findings_key", FINDINGS_COLUMNS)
        if column is None:
            raise ValueError(f"{self.source}: no findings column ({', '.join(repr(c) for c in FINDINGS_COLUMNS)}); "
                             f"columns present: {self.table().present()}")
        return findings_layout(self, column, label_names, task)

"""One reader per kind of dataset description, all behind :class:`DatalistSource` and all returning the same
records (a :class:`~medclass.data.datalist.Datalist` of ``{"image", "label", "id", ...}`` items):

========================  =============================================  ===========================================
source                    reader                                         module
========================  =============================================  ===========================================
CSV/TSV label file        :class:`CsvSource` (chooses the label layout)  :mod:`~medclass.data.sources.csvfile`
NIH ChestX-ray14 CSV      :class:`NihCsvSource` (findings column)        :mod:`~medclass.data.sources.nih`
MONAI-style JSON          :class:`JsonSource`                            :mod:`~medclass.data.sources.jsonlist`
class-per-folder tree     :class:`FolderSource`                          :mod:`~medclass.data.sources.folders`
MedMNIST v2 ``.npz``      :class:`MedmnistSource`                        :mod:`~medclass.data.sources.medmnist`
========================  =============================================  ===========================================

:func:`medclass.data.load_datalist` picks the reader (:data:`SOURCES`, by :meth:`DatalistSource.accepts`).
"""

from __future__ import annotations

from medclass.data.sources.base import DatalistSource
from medclass.data.sources.csvfile import CsvSource
from medclass.data.sources.folders import FolderSource
from medclass.data.sources.jsonlist import JsonSource
from medclass.data.sources.medmnist import MEDMNIST_INFO, MedmnistSource, load_medmnist, medmnist_flag
from medclass.data.sources.nih import NihCsvSource
from medclass.data.sources.table import CSV_OPTIONS, TableSource

__all__ = [
    "CSV_OPTIONS", "CsvSource", "DatalistSource", "FolderSource", "JsonSource", "MEDMNIST_INFO", "MedmnistSource",
    "NihCsvSource", "SOURCES", "TableSource", "load_medmnist", "medmnist_flag",
]

#: The readers :func:`medclass.data.load_datalist` chooses from, in order (the first that accepts a source).
SOURCES: tuple[type[DatalistSource], ...] = (FolderSource, CsvSource, JsonSource, MedmnistSource)

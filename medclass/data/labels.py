"""Label vocabularies and label-vector helpers.

A label is a float32 vector of length C (one entry per label name): 1.0 positive, 0.0 negative,
NaN unknown (missing or uncertain). Multi-class labels are one-hot vectors (all-NaN when unknown).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "CXR14_LABELS",
    "NO_FINDING",
    "FindingsParser",
    "label_matrix",
    "label_prevalence",
    "labels_from_findings",
    "normalize_name",
]

#: The 14 ChestX-ray14 findings in the official order (Wang et al., CVPR 2017).
CXR14_LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)

#: The ChestX-ray14 marker of an image with none of the 14 findings.
NO_FINDING = "No Finding"

_NAME_SEP = re.compile(r"[\s_\-]+")


def normalize_name(name: str) -> str:
    """Case-, space-, underscore- and hyphen-insensitive key for matching label and column names.

    ``"Pleural_Thickening"``, ``"pleural thickening"`` and ``"PLEURAL-THICKENING"`` all map to
    ``"pleural thickening"``.
    """
    return _NAME_SEP.sub(" ", str(name).strip().lower()).strip()


class FindingsParser:
    """Turns findings strings (``"Effusion|Mass"``) into label vectors; caches repeated strings.

    Used by :func:`labels_from_findings` and by the CSV loader, where the 112,120 rows of the ChestX-ray14
    label file hold only about 800 distinct strings.

    Args:
        label_names: the labels of the output vector, in order (length C).
        no_finding: the marker of an image with no finding (all labels 0). Matching ignores case.
        sep: separator between findings.
        ignore: findings that may occur but are not in ``label_names`` (they leave the vector unchanged).
            ``None`` means: the ChestX-ray14 findings, when every label name is a ChestX-ray14 finding (a
            subset of the 14 chosen on purpose); otherwise nothing.
    """

    def __init__(
        self,
        label_names: Sequence[str],
        no_finding: str = NO_FINDING,
        sep: str = "|",
        ignore: Iterable[str] | None = None,
    ) -> None:
        self.label_names = [str(n) for n in label_names]
        if not self.label_names:
            raise ValueError("labels_from_findings: label_names is empty")
        self.index: dict[str, int] = {}
        for i, name in enumerate(self.label_names):
            key = normalize_name(name)
            if key in self.index:
                raise ValueError(f"label names {self.label_names} hold {name!r} twice (names match ignoring case)")
            self.index[key] = i
        cxr14 = {normalize_name(n) for n in CXR14_LABELS}
        if ignore is None:
            ignore = CXR14_LABELS if set(self.index) <= cxr14 else ()
        self.ignore = {normalize_name(n) for n in ignore} - set(self.index)
        self.no_finding = normalize_name(no_finding) if no_finding else None
        self.sep = sep
        self._cache: dict[str, np.ndarray] = {}

    def valid_names(self) -> list[str]:
        """The findings this parser accepts, for error messages."""
        names = list(self.label_names)
        names += [n for n in CXR14_LABELS if normalize_name(n) in self.ignore]
        if self.no_finding:
            names.append(NO_FINDING if self.no_finding == normalize_name(NO_FINDING) else self.no_finding)
        return names

    def __call__(self, text: str | None, where: str) -> np.ndarray:
        """Parse one findings string; returns a new float32 vector of shape (C,)."""
        if text is None or (isinstance(text, float) and math.isnan(text)):
            text = ""
        if not isinstance(text, str):
            raise ValueError(f"{where}: findings {text!r} is not a string of names separated by {self.sep!r}")
        cached = self._cache.get(text)
        if cached is None:
            cached = self._parse(text, where)
            self._cache[text] = cached
        return cached.copy()

    def _parse(self, text: str, where: str) -> np.ndarray:
        parts = [p.strip() for p in text.split(self.sep)]
        parts = [p for p in parts if p]
        if not parts:
            return np.full(len(self.label_names), np.nan, dtype=np.float32)
        vec = np.zeros(len(self.label_names), dtype=np.float32)
        keys = [normalize_name(p) for p in parts]
        if self.no_finding and self.no_finding in keys:
            if len(keys) > 1:
                raise ValueError(f"{where}: findings {text!r} combine {NO_FINDING!r} with other findings")
            return vec
        for part, key in zip(parts, keys):
            i = self.index.get(key)
            if i is not None:
                vec[i] = 1.0
            elif key not in self.ignore:
                raise ValueError(
                    f"{where}: unknown finding {part!r} in {text!r}; valid names: {', '.join(self.valid_names())}"
                )
        return vec


def labels_from_findings(
    text: str | None,
    label_names: Sequence[str],
    where: str,
    no_finding: str = NO_FINDING,
    sep: str = "|",
    ignore: Iterable[str] | None = None,
) -> np.ndarray:
    """Label vector from a findings string such as ``"Cardiomegaly|Effusion"`` (ChestX-ray14 format).

    ``no_finding`` alone gives all zeros; a blank string gives all NaN (unknown). Names match ignoring case,
    spaces, underscores and hyphens. A finding that is not in ``label_names`` raises, unless it is in
    ``ignore``; by default ``ignore`` holds the ChestX-ray14 findings when ``label_names`` is a subset of them,
    so ``label_names=["Effusion", "Mass"]`` reads ``"Nodule|Mass"`` as ``[0, 1]``.

    Args:
        text: the findings, separated by ``sep``.
        label_names: output labels, in order (length C).
        where: location for error messages (file, row).
        no_finding: marker of a normal image.
        sep: separator.
        ignore: valid findings that are not output labels (see above).

    Returns:
        float32 array of shape (C,), values in {0, 1} or all NaN.

    Raises:
        ValueError: an unknown finding (the message lists the valid names), or ``no_finding`` combined with a
            finding.
    """
    return FindingsParser(label_names, no_finding=no_finding, sep=sep, ignore=ignore)(text, where)


def label_matrix(items: Sequence[Mapping[str, Any]], num_labels: int | None = None) -> np.ndarray:
    """Stack the ``"label"`` vectors of datalist items.

    Args:
        items: datalist items, each with ``"label"`` of shape (C,).
        num_labels: C, needed only to shape the result of an empty ``items``.

    Returns:
        float32 array of shape (N, C) with values 1, 0 or NaN.

    Raises:
        ValueError: an item without a label, or labels of different lengths (names the item id).
    """
    if not items:
        return np.zeros((0, num_labels or 0), dtype=np.float32)
    rows = []
    for k, item in enumerate(items):
        label = item.get("label")
        where = f"item {k} (id {item.get('id', '?')!r})"
        if label is None:
            raise ValueError(f"{where} has no 'label'")
        row = np.asarray(label, dtype=np.float32).reshape(-1)
        if num_labels is None:
            num_labels = row.shape[0]
        if row.shape[0] != num_labels:
            raise ValueError(f"{where} has {row.shape[0]} label values, expected {num_labels}")
        rows.append(row)
    return np.stack(rows).astype(np.float32, copy=False)


def label_prevalence(items: Sequence[Mapping[str, Any]], label_names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per-label counts over datalist items.

    Args:
        items: datalist items with ``"label"`` of shape (C,).
        label_names: the C label names.

    Returns:
        ``{name: {"positives": int, "negatives": int, "unknown": int, "prevalence": float}}`` where prevalence
        is positives / (positives + negatives) in [0, 1], NaN when no value is known.
    """
    names = list(label_names)
    labels = label_matrix(items, num_labels=len(names))
    if labels.shape[1] != len(names):
        raise ValueError(f"labels have {labels.shape[1]} values per item but {len(names)} label names were given")
    pos = (labels == 1).sum(0)
    neg = (labels == 0).sum(0)
    unknown = np.isnan(labels).sum(0)
    out: dict[str, dict[str, Any]] = {}
    for c, name in enumerate(names):
        known = int(pos[c] + neg[c])
        out[name] = {
            "positives": int(pos[c]),
            "negatives": int(neg[c]),
            "unknown": int(unknown[c]),
            "prevalence": float(pos[c]) / known if known else float("nan"),
        }
    return out

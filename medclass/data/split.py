"""Patient-disjoint, label-stratified splits and split reports."""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medclass.data.datalist import Datalist
from medclass.data.labels import label_matrix
from medclass.files import atomic_write
from medclass.vocab import ALL_SPLIT, SPLIT_NAMES, canonical_split

logger = logging.getLogger(__name__)

__all__ = [
    "SPLIT_FILE_COLUMNS",
    "apply_split_file",
    "ensure_splits",
    "read_split_file",
    "log_split_report",
    "patient_key",
    "patient_overlap",
    "split_patients",
    "split_report",
    "write_split_file",
]

#: columns of a split file (``models/split.csv``, ``medclass split --out``)
SPLIT_FILE_COLUMNS = ("id", "image", "patient_id", "split")


def patient_key(item: Mapping[str, Any]) -> str:
    """The patient an item belongs to: its ``patient_id``, or (when absent or blank) the item itself.

    Returns ``"patient:<patient_id>"`` or ``"image:<id>"`` so a patient id never clashes with an image id.
    """
    pid = item.get("patient_id")
    if pid is not None and str(pid).strip():
        return f"patient:{str(pid).strip()}"
    return f"image:{item.get('id', id(item))}"


def _check_fractions(fractions: Sequence[float], names: Sequence[str]) -> np.ndarray:
    frac = np.asarray(list(fractions), dtype=np.float64)
    if len(names) != len(set(names)) or not names:
        raise ValueError(f"split names {list(names)} must be distinct and not empty")
    if frac.shape != (len(names),):
        raise ValueError(f"{len(frac)} fractions {list(fractions)} for {len(names)} splits {list(names)}")
    if not np.all(np.isfinite(frac)) or np.any(frac <= 0):
        raise ValueError(f"split fractions {list(fractions)} must all be > 0")
    if abs(frac.sum() - 1.0) > 1e-6:
        raise ValueError(f"split fractions {list(fractions)} must sum to 1 (sum {frac.sum():.6g})")
    return frac


def split_patients(
    items: Sequence[dict[str, Any]],
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    names: Sequence[str] = ("training", "validation", "test"),
) -> dict[str, list[dict[str, Any]]]:
    """Split items patient-disjointly, stratified by label prevalence.

    Iterative stratification (Sechidis et al., ECML 2011) on patients: a patient's label vector is the
    positive-image count per label over its images (NaN/unknown counts as not positive). The label with the
    fewest unassigned positive patients is handled first; each of its patients goes to the split that most
    lacks positive images of that label (ties: the split furthest below its target image count, then a
    seeded random pick). Patients with no positive label are then placed by image count. Targets are in
    images, so split sizes follow ``fractions`` in images even when patients have several images.

    Args:
        items: datalist items; ``patient_id`` groups items (absent or blank: the item is its own patient);
            ``label`` (C,) drives the stratification (items without a label only count toward the sizes).
        fractions: share of images per split, each > 0, summing to 1.
        seed: seed of the tie-breaking and patient order; the same items and seed give the same split.
        names: the split names, one per fraction.

    Returns:
        ``{name: [items]}`` in ``names`` order; each list keeps the input order; items are the same objects.

    Raises:
        ValueError: bad fractions, or fewer patients than splits (the message names the split that would be
            empty and the number of patients).
    """
    names = [str(n) for n in names]
    frac = _check_fractions(fractions, names)
    n_items = len(items)
    patient_index: dict[str, int] = {}
    item_patient = np.empty(n_items, dtype=np.int64)
    for k, item in enumerate(items):
        item_patient[k] = patient_index.setdefault(patient_key(item), len(patient_index))
    n_patients = len(patient_index)
    if n_patients < len(names):
        empty = names[n_patients:] if n_patients else names
        raise ValueError(
            f"cannot split {n_items} images of {n_patients} patient(s) into {len(names)} splits {names}: "
            f"split {empty[0]!r} would be empty"
        )
    has_labels = n_items and all(item.get("label") is not None for item in items)
    if has_labels:
        positives = (label_matrix(items) == 1).astype(np.float64)  # (N, C), NaN compares False
    else:
        positives = np.zeros((n_items, 0))
    c = positives.shape[1]
    pos = np.zeros((n_patients, c))
    np.add.at(pos, item_patient, positives)
    size = np.bincount(item_patient, minlength=n_patients).astype(np.float64)

    rng = np.random.default_rng(seed)
    n_splits = len(names)
    need_images = frac * size.sum()  # (S,)
    need_pos = frac[:, None] * pos.sum(0)[None, :]  # (S, C)
    assignment = np.full(n_patients, -1, dtype=np.int64)
    order = rng.permutation(n_patients)

    def assign(p: int, choice: int) -> None:
        assignment[p] = choice
        need_images[choice] -= size[p]
        need_pos[choice] -= pos[p]

    def pick(candidates: np.ndarray) -> int:
        if candidates.size == 1:
            return int(candidates[0])
        room = need_images[candidates]
        candidates = candidates[room >= room.max() - 1e-9]
        return int(candidates[0] if candidates.size == 1 else rng.choice(candidates))

    positive_patients = pos > 0  # (P, C)
    while True:
        open_mask = assignment[order] < 0
        remaining = positive_patients[order[open_mask]].sum(0) if c else np.zeros(0)
        if not np.any(remaining > 0):
            break
        label = int(np.argmin(np.where(remaining > 0, remaining, np.inf)))
        for p in order[open_mask & positive_patients[order, label]]:
            want = need_pos[:, label]
            assign(int(p), pick(np.flatnonzero(want >= want.max() - 1e-9)))
    for p in order[assignment[order] < 0]:
        assign(int(p), pick(np.arange(n_splits)))

    # with very few patients a split can stay empty: move a patient from the split with the most patients
    for s in range(n_splits):
        if not np.any(assignment == s):
            counts = np.bincount(assignment, minlength=n_splits)
            donor = int(np.argmax(counts))
            members = np.flatnonzero(assignment == donor)
            moved = int(members[np.argmin(size[members])])
            assignment[moved] = s
            logger.debug("split %r was empty: moved one patient from %r", names[s], names[donor])

    result: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for k, item in enumerate(items):
        result[names[assignment[item_patient[k]]]].append(item)
    return result


def patient_overlap(splits: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, set[str]]:
    """Patient ids shared between splits.

    Returns:
        ``{"training/test": {"231", ...}, ...}`` for every pair of splits that share a patient (empty dict when
        the splits are patient-disjoint). Items without a patient id never overlap.
    """
    per: dict[str, set[str]] = {
        name: {str(i["patient_id"]).strip() for i in items if str(i.get("patient_id") or "").strip()}
        for name, items in splits.items()
    }
    names = list(per)
    out: dict[str, set[str]] = {}
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            shared = per[names[a]] & per[names[b]]
            if shared:
                out[f"{names[a]}/{names[b]}"] = shared
    return out


def split_report(
    splits: Mapping[str, Sequence[Mapping[str, Any]]], label_names: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Sizes and per-label prevalence of each split.

    Returns:
        ``{split: {"images": int, "patients": int, "labels": {name: {"positives": int, "known": int,
        "prevalence": float}}}}``; prevalence = positives / known (images with a known value), in [0, 1],
        NaN when nothing is known.
    """
    names = list(label_names)
    report: dict[str, dict[str, Any]] = {}
    for split, items in splits.items():
        labels = label_matrix(items, num_labels=len(names))
        if labels.shape[1] != len(names):
            raise ValueError(f"split {split!r}: labels have {labels.shape[1]} values, {len(names)} label names given")
        pos = (labels == 1).sum(0)
        known = (~np.isnan(labels)).sum(0)
        report[split] = {
            "images": len(items),
            "patients": len({patient_key(i) for i in items}),
            "labels": {
                name: {
                    "positives": int(pos[c]),
                    "known": int(known[c]),
                    "prevalence": float(pos[c] / known[c]) if known[c] else float("nan"),
                }
                for c, name in enumerate(names)
            },
        }
    return report


def log_split_report(
    splits: Mapping[str, Sequence[Mapping[str, Any]]],
    label_names: Sequence[str],
    level: int = logging.INFO,
    log: logging.Logger | None = None,
) -> str:
    """Log :func:`split_report` as a table (one row per label, positives and prevalence per split).

    Returns:
        The table text that was logged.
    """
    report = split_report(splits, label_names)
    splits_order = list(report)
    first = max([len("patients"), *(len(n) for n in label_names)]) + 2
    col = max(16, *(len(s) + 2 for s in splits_order))
    lines = ["".ljust(first) + "".join(s.rjust(col) for s in splits_order)]
    lines.append("images".ljust(first) + "".join(str(report[s]["images"]).rjust(col) for s in splits_order))
    lines.append("patients".ljust(first) + "".join(str(report[s]["patients"]).rjust(col) for s in splits_order))
    for name in label_names:
        cells = []
        for s in splits_order:
            entry = report[s]["labels"][name]
            prev = entry["prevalence"]
            share = "n/a" if math.isnan(prev) else f"{prev * 100:.1f}%"
            text = f"{entry['positives']} ({share})"
            cells.append(text.rjust(col))
        lines.append(str(name).ljust(first) + "".join(cells))
    overlap = patient_overlap(splits)
    if overlap:
        lines.append("shared patients: " + ", ".join(f"{k}: {len(v)}" for k, v in overlap.items()))
    text = "\n".join(lines)
    (log or logger).log(level, "split report\n%s", text)
    return text


def ensure_splits(
    datalist: Datalist,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    *,
    resplit: bool = False,
) -> Datalist:
    """Return a datalist with non-empty training, validation and test splits.

    * ``resplit=True``: pool every split and re-split patient-disjointly with ``fractions`` (use it for a given
      split that shares patients, such as NIH1000's).
    * only ``"all"``: split it patient-disjointly with ``fractions``.
    * training, validation and test given: kept (a warning is logged when they share patients).
    * training without validation and/or test: the missing splits are carved out of training
      patient-disjointly, in the proportions of ``fractions`` (training + test given, fractions
      (0.7, 0.15, 0.15): 0.15 / 0.85 of the training patients become validation).

    Args:
        datalist: the loaded datalist (not modified).
        fractions: (training, validation, test) shares of images.
        seed: split seed.
        resplit: pool and re-split even when splits are given.

    Returns:
        A new :class:`Datalist` with splits training, validation, test (same item objects).

    Raises:
        ValueError: validation/test given without training, or a final split that is empty (named).
    """
    frac = _check_fractions(fractions, SPLIT_NAMES)
    given = datalist.splits
    where = datalist.source or "datalist"
    if resplit or ALL_SPLIT in given:
        pooled = datalist.all_items()
        if not pooled:
            raise ValueError(f"{where}: no items to split")
        splits = split_patients(pooled, frac, seed, SPLIT_NAMES)
    else:
        if "training" not in given:
            raise ValueError(f"{where}: has splits {sorted(given)} but no 'training' split to train on or carve from")
        missing = [s for s in SPLIT_NAMES if s not in given]
        splits = {s: list(given[s]) for s in SPLIT_NAMES if s in given}
        if missing:
            parts = ["training", *missing]
            sub = np.array([frac[SPLIT_NAMES.index(s)] for s in parts])
            if not given["training"]:
                raise ValueError(f"{where}: split 'training' is empty, cannot carve {missing} out of it")
            carved = split_patients(given["training"], sub / sub.sum(), seed, parts)
            splits.update(carved)
            logger.info("%s: carved %s out of training (patient-disjoint)", where, missing)
        overlap = patient_overlap(splits)
        if overlap:
            logger.warning(
                "%s: the given splits share patients (%s); pass resplit=True for a patient-disjoint split",
                where,
                ", ".join(f"{k}: {len(v)}" for k, v in overlap.items()),
            )
    for s in SPLIT_NAMES:
        if not splits.get(s):
            raise ValueError(f"{where}: split {s!r} is empty")
    ordered = {s: splits[s] for s in SPLIT_NAMES}
    out = Datalist(ordered, list(datalist.label_names), datalist.task, source=datalist.source)
    logger.info("%s: splits %s", where, out.sizes())
    return out


def _image_text(image: Any) -> str:
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    return "(array)"  # MedMNIST npz items hold their pixels, not a path


def write_split_file(path: str | os.PathLike, splits: Mapping[str, Sequence[Mapping[str, Any]]]) -> Path:
    """Write the split a run used: one row per image, ``id, image, patient_id, split``.

    The file is what :func:`apply_split_file` (the bundles' ``split_file``) reads back to repeat the split. It
    names images and patients as the datalist does: a record that belongs with the data, not with a published
    model. Written to a temporary file and renamed, so a reader never sees half a file.

    Args:
        path: the CSV to write (its folder is created).
        splits: ``{split: [items]}`` (items with ``id``, ``image`` and optionally ``patient_id``).

    Returns:
        The path written.
    """
    path = Path(path)
    with atomic_write(path, newline="") as f:
        w = csv.writer(f)
        w.writerow(SPLIT_FILE_COLUMNS)
        for split, items in splits.items():
            for it in items:
                pid = it.get("patient_id")
                w.writerow([it.get("id", ""), _image_text(it.get("image")), "" if pid is None else str(pid).strip(),
                            split])
    logger.info("split written to %s (%s)", path, ", ".join(f"{k}: {len(v)}" for k, v in splits.items()))
    return path


def read_split_file(path: str | os.PathLike) -> dict[str, str]:
    """``{image id: canonical split}`` from a split file (needs ``id`` and ``split`` columns).

    Raises:
        FileNotFoundError: no such file.
        ValueError: missing columns, an empty or repeated id, or an unknown split name (naming the file and row).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: split file does not exist")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in ("id", "split") if c not in header]
        if missing:
            raise ValueError(f"{path}: split file lacks column(s) {missing}; it has {header}")
        out: dict[str, str] = {}
        for row_no, row in enumerate(reader, start=2):
            key = (row.get("id") or "").strip()
            if not key:
                raise ValueError(f"{path} row {row_no}: empty id")
            if key in out:
                raise ValueError(f"{path} row {row_no}: id {key!r} appears twice")
            split = canonical_split(row.get("split") or "", f"{path} row {row_no}")
            if split == ALL_SPLIT:
                raise ValueError(f"{path} row {row_no}: split 'all' is not a split; use training, validation or test")
            out[key] = split
    if not out:
        raise ValueError(f"{path}: split file has no rows")
    return out


def apply_split_file(datalist: Datalist, path: str | os.PathLike) -> Datalist:
    """The datalist's items arranged into the splits a split file gives (matched by image id).

    Raises:
        ValueError: ids of the file missing from the datalist, or datalist items the file does not place (the
            message names the file, how many and the first few), or a split left empty.
    """
    wanted = read_split_file(path)
    items = datalist.all_items()
    by_id = {str(it.get("id")): it for it in items}
    unknown = [k for k in wanted if k not in by_id]
    unplaced = [k for k in by_id if k not in wanted]
    if unknown or unplaced:
        parts = []
        if unknown:
            parts.append(f"{len(unknown)} id(s) not in the datalist (e.g. {unknown[:5]})")
        if unplaced:
            parts.append(f"{len(unplaced)} datalist image(s) it does not place (e.g. {unplaced[:5]})")
        raise ValueError(f"{path}: split file does not match {datalist.source or 'the datalist'}: "
                         + "; ".join(parts))
    splits: dict[str, list] = {name: [] for name in SPLIT_NAMES}
    for it in items:
        splits[wanted[str(it.get("id"))]].append(it)
    for name in SPLIT_NAMES:
        if not splits[name]:
            raise ValueError(f"{path}: split file leaves split {name!r} empty")
    overlap = patient_overlap(splits)
    if overlap:
        logger.warning("%s: the split file's splits share patients (%s)", path,
                       ", ".join(f"{k}: {len(v)}" for k, v in overlap.items()))
    out = Datalist(splits, list(datalist.label_names), datalist.task, source=datalist.source)
    logger.info("%s: splits from %s: %s", datalist.source or "datalist", path, out.sizes())
    return out

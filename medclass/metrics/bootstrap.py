"""Bootstrap confidence intervals that resample patients (clusters) when patient ids exist."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def cluster_index(groups: Sequence[Any] | None, n: int) -> list[np.ndarray]:
    """Row indices per resampling unit: one unit per distinct non-empty group (patient), and one per row
    whose group is missing/empty (or every row when ``groups`` is ``None``)."""
    if groups is None:
        return [np.array([i]) for i in range(n)]
    if len(groups) != n:
        raise ValueError(f"{len(groups)} patient ids for {n} rows")
    members: dict[Any, list[int]] = {}
    units: list[list[int]] = []
    for i, g in enumerate(groups):
        if g is None or (isinstance(g, float) and np.isnan(g)) or str(g).strip() == "":
            units.append([i])
            continue
        key = str(g)
        if key not in members:
            members[key] = []
            units.append(members[key])
        members[key].append(i)
    return [np.asarray(u, dtype=np.int64) for u in units]


def resample_indices(units: list[np.ndarray], n_resamples: int, seed: int = 0):
    """Yield ``n_resamples`` row-index arrays, each drawing ``len(units)`` units with replacement."""
    rng = np.random.default_rng(seed)
    k = len(units)
    for _ in range(int(n_resamples)):
        chosen = rng.integers(0, k, size=k)
        yield np.concatenate([units[c] for c in chosen])


def bootstrap_ci(statistic: Callable[[np.ndarray], Any], n: int, groups: Sequence[Any] | None = None,
                 n_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Percentile bootstrap interval of ``statistic(indices)`` (a float or an array of floats).

    Args:
        statistic: maps row indices ``(M,)`` to a value (``nan`` where a resample leaves it undefined, e.g. a
            label with no positive drawn).
        n: number of rows.
        groups: patient id per row (resampled as whole patients); ``None``: rows are independent.
        n_resamples: bootstrap resamples.
        seed: random seed (the same seed gives the same interval).
        level: coverage of the interval.

    Returns:
        ``{"lower", "upper"}`` (arrays or floats, ``nan`` where fewer than half the resamples defined the
        value), ``"valid"`` (resamples with a defined value), ``"n_resamples"``, ``"units"`` and ``"unit"``
        (``patient`` or ``image``).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if int(n_resamples) < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    units = cluster_index(groups, n)
    values = np.array([np.asarray(statistic(idx), dtype=np.float64)
                       for idx in resample_indices(units, n_resamples, seed)])
    alpha = (1 - level) / 2
    valid = (~np.isnan(values)).sum(axis=0)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lower = np.nanquantile(values, alpha, axis=0)
            upper = np.nanquantile(values, 1 - alpha, axis=0)
    enough = valid >= 0.5 * int(n_resamples)
    lower = np.where(enough, lower, np.nan)
    upper = np.where(enough, upper, np.nan)
    scalar = values.ndim == 1
    return {
        "lower": float(lower) if scalar else lower,
        "upper": float(upper) if scalar else upper,
        "valid": int(valid) if scalar else valid,
        "n_resamples": int(n_resamples),
        "units": len(units),
        "unit": "patient" if groups is not None and any(
            g is not None and str(g).strip() not in ("", "nan") for g in groups) else "image",
        "level": level,
        "seed": seed,
    }

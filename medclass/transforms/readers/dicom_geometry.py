"""DICOM geometry: pixel and slice spacing, direction cosines, the ordering and checking of a stack of slices or
frames, and the voxel-to-RAS affine built from ``ImageOrientationPatient`` / ``ImagePositionPatient`` (as ITK does).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "ORIENTATION_ATOL", "SLICE_GAP_FACTOR", "SLICE_SPACING_ATOL", "SLICE_SPACING_RTOL", "directions", "floats",
    "lps_to_ras_affine", "pixel_spacing", "slice_spacing", "sort_slices",
]


def pixel_spacing(ds) -> tuple[float, float] | None:
    """``(row spacing, column spacing)`` in mm from ``PixelSpacing`` / ``ImagerPixelSpacing``, or None."""
    for tag in ("PixelSpacing", "ImagerPixelSpacing"):
        try:
            sp = [float(v) for v in (ds.get(tag, None) or [])]
        except (TypeError, ValueError):
            continue
        if len(sp) >= 2 and sp[0] > 0 and sp[1] > 0 and all(np.isfinite(sp[:2])):
            return sp[0], sp[1]
    return None


def slice_spacing(ds) -> float | None:
    """``SpacingBetweenSlices`` or else ``SliceThickness`` in mm, or None."""
    for tag in ("SpacingBetweenSlices", "SliceThickness"):
        try:
            v = float(ds.get(tag, None) or 0)
        except (TypeError, ValueError):
            continue
        if v > 0 and np.isfinite(v):
            return v
    return None


def floats(value, n: int) -> np.ndarray | None:
    """``n`` finite floats from a DICOM multi-value, or ``None``."""
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if arr.shape != (n,) or not np.isfinite(arr).all():
        return None
    return arr


def directions(iop: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``ImageOrientationPatient`` -> unit row direction, column direction and slice normal (LPS)."""
    r, c = iop[:3], iop[3:]
    nr, nc = np.linalg.norm(r), np.linalg.norm(c)
    if nr < 1e-6 or nc < 1e-6 or abs(float(r @ c)) / (nr * nc) > 1e-2:
        raise ValueError(f"{name}: invalid ImageOrientationPatient {iop.tolist()} (not two orthogonal directions)")
    r, c = r / nr, c / nc
    return r, c, np.cross(r, c)


#: A gap between neighbouring slices of more than this many median spacings means missing slices.
SLICE_GAP_FACTOR = 1.5
#: Allowed deviation of a slice-to-slice spacing from the median, relative (and the absolute floor in mm).
SLICE_SPACING_RTOL = 0.02
SLICE_SPACING_ATOL = 0.02
#: Largest difference between the direction cosines of two slices of one volume.
ORIENTATION_ATOL = 1e-3


def sort_slices(
    ipps: np.ndarray, normal: np.ndarray, labels: list[str], name: str, pixel_mm: float, what: str = "slice"
) -> tuple[np.ndarray, np.ndarray]:
    """Order slices by position along ``normal`` and check they form one evenly spaced stack.

    Args:
        ipps: ``(N, 3)`` ``ImagePositionPatient`` per slice (mm, LPS).
        normal: unit slice normal (row direction x column direction).
        labels: how to name each slice in errors (file name or ``frame k``).
        name: the folder / file the stack comes from (prefix of every error).
        pixel_mm: the smaller in-plane pixel spacing (tolerance of the in-plane alignment check).
        what: ``"slice"`` or ``"frame"``.

    Returns:
        ``(order, step)``: indices sorting the slices by increasing position along the normal, and the
        mean position step between neighbouring slices (the affine's slice axis; it has an in-plane
        component for gantry-tilted CT).

    Raises:
        ValueError: duplicated positions, missing slices, uneven spacing or slices off one line.
    """
    n = len(ipps)
    pos = ipps @ normal
    order = np.argsort(pos, kind="stable")
    p = pos[order]
    d = np.diff(p)
    moving = d[d > 1e-6]
    med = float(np.median(moving)) if moving.size else 0.0
    dup_tol = max(1e-3, 0.01 * med)
    dup = np.nonzero(d <= dup_tol)[0]
    if dup.size:
        k = int(dup[0])
        a, b = labels[order[k]], labels[order[k + 1]]
        raise ValueError(
            f"{name}: duplicated {what} positions: {dup.size} pair(s) of {what}s share a position (e.g. {a} and "
            f"{b} both at {p[k]:.3f} mm along the slice normal); a volume must hold each position once (not "
            f"several acquisitions, echoes or time points)"
        )
    gaps = np.nonzero(d > SLICE_GAP_FACTOR * med)[0]
    if gaps.size:
        k = int(gaps[0])
        missing = round(float(d[k] / med)) - 1
        raise ValueError(
            f"{name}: missing {what}s: a gap of {d[k]:.3f} mm between {labels[order[k]]} and "
            f"{labels[order[k + 1]]} where the median {what} spacing is {med:.3f} mm (about "
            f"{max(missing, 1)} {what}(s) missing; {len(gaps)} gap(s) in all)"
        )
    tol = max(SLICE_SPACING_RTOL * med, SLICE_SPACING_ATOL)
    uneven = np.nonzero(np.abs(d - med) > tol)[0]
    if uneven.size:
        k = int(uneven[np.argmax(np.abs(d[uneven] - med))])
        raise ValueError(
            f"{name}: uneven {what} spacing: spacings range from {d.min():.3f} to {d.max():.3f} mm (median "
            f"{med:.3f} mm, tolerance {tol:.3f} mm), e.g. {d[k]:.3f} mm between {labels[order[k]]} and "
            f"{labels[order[k + 1]]}"
        )
    sorted_ipps = ipps[order]
    step = (sorted_ipps[-1] - sorted_ipps[0]) / (n - 1)
    resid = sorted_ipps - (sorted_ipps[0] + np.arange(n)[:, None] * step)
    worst = float(np.abs(resid).max())
    if worst > max(0.5 * pixel_mm, 0.05):
        k = int(np.abs(resid).max(axis=1).argmax())
        raise ValueError(
            f"{name}: the {what}s are not stacked on one line: {labels[order[k]]} is {worst:.3f} mm off the line "
            f"through the first and last {what} positions"
        )
    return order, step


def lps_to_ras_affine(
    row_dir: np.ndarray, col_dir: np.ndarray, step: np.ndarray, origin: np.ndarray, row_col_mm: tuple[float, float]
) -> np.ndarray:
    """Voxel ``(column i, row j, slice k)`` -> RAS world affine from DICOM (LPS) geometry.

    DICOM: ``P(i, j, k) = origin + i * col_spacing * row_dir + j * row_spacing * col_dir + k * step``
    (``row_dir`` is the direction along a row, i.e. of increasing column index). The MetaTensor
    convention (nibabel / MONAI) is RAS, so x and y change sign.
    """
    a = np.eye(4, dtype=np.float64)
    a[:3, 0] = row_dir * row_col_mm[1]
    a[:3, 1] = col_dir * row_col_mm[0]
    a[:3, 2] = step
    a[:3, 3] = origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ a

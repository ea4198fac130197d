"""Orientation of 2D images from the file's own geometry, and the way back to the input's voxel grid.

**2D convention.** A 2D image is returned as ``(C, H, W)`` in DICOM display order: rows top to bottom,
columns left to right, as a radiologist views the image. The order is decided by the image's geometry in
patient space (the voxel-to-RAS affine of its stored grid), never by how a file happens to store its array:

* of the two in-plane axes, rows follow the one closer to the head-feet (S/I) axis when either in-plane axis
  runs mostly head-feet, and then point to the feet (I, head at the top); otherwise (an axial-like plane) rows
  follow the axis closer to the anterior-posterior axis and point posterior (P, anterior at the top);
* columns follow the other in-plane axis and point to the patient's left (L, the patient's right on the
  viewer's left) when it runs more left-right than anterior-posterior, else posterior (P).

Sources without a geometry -- DICOM without ``ImageOrientationPatient`` (most CR / DX radiographs), PNG / JPEG
/ TIFF, arrays -- are placed as ITK (and so 3D Slicer) places them: rows running posterior, columns running to
the patient's left, i.e. their stored pixel order is the display order. A NIfTI (or NRRD / MHA) written from
such a DICOM by ITK, SimpleITK or 3D Slicer stores ``(columns, rows[, 1])`` with an LPS identity direction
(RAS affine ``diag(-sx, -sy, sz)``) and therefore comes back exactly in the DICOM's pixel order. A DICOM *with*
``ImageOrientationPatient`` (e.g. a coronal image, or one stored mirrored or transposed) follows the same rule,
so the DICOM and any correct conversion of it (whatever order and affine the converter chose) give one array.
Standard axial, coronal and sagittal DICOM images come out as stored; ``PatientOrientation`` is not used
(ITK ignores it, so a converted file could not agree).

What a NIfTI cannot tell: it has no photometric interpretation, so the reader takes its values as they are.
ITK's GDCM reader inverts ``MONOCHROME1`` (SimpleITK 2.5 writes ``2**BitsStored - 1 - stored``; measured on
``RG1_J2KI.dcm``), so a SimpleITK conversion reads as bright bone like the DICOM (a viewer reading DICOM through
another library may not invert: check its output); a NIfTI holding the stored
``MONOCHROME1`` values (e.g. written by nibabel from pydicom's ``pixel_array``, or by converters that copy the
pixels) reads inverted, dark bone, and must be inverted before use. Likewise a NIfTI without ``qform`` /
``sform`` gets nibabel's default (Analyze, LAS) affine, which viewers following the NIfTI standard place
mirrored.

The reader keeps, in the metadata, ``source_affine`` (voxel of the image as stored -> RAS mm) and
``world_affine`` (voxel of the returned array -> RAS mm): a map written with ``world_affine`` lands where the
input was. :func:`input_geometry` gives a map computed on the reader's array back on the input's own voxel
grid, with the input's own affine.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = ["LPS_TO_RAS", "InputGeometry", "display_axes", "input_geometry", "plane_affine"]

#: DICOM / ITK patient coordinates (LPS) to the RAS coordinates of NIfTI and MONAI affines.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_ATOL = 1e-3  # tolerance of "this index map is a permutation with flips" (index units)


def plane_affine(
    row_dir: Any = (1.0, 0.0, 0.0),
    col_dir: Any = (0.0, 1.0, 0.0),
    spacing: tuple[float, float] = (1.0, 1.0),
    origin: Any = (0.0, 0.0, 0.0),
    thickness: float = 1.0,
) -> np.ndarray:
    """RAS affine of a stored ``(rows, columns)`` pixel grid from DICOM (LPS) geometry.

    Args:
        row_dir: unit direction along a row (of increasing column index), LPS: ``ImageOrientationPatient[:3]``.
        col_dir: unit direction down a column (of increasing row index), LPS: ``ImageOrientationPatient[3:]``.
        spacing: ``(row spacing, column spacing)`` in mm (``PixelSpacing`` order).
        origin: LPS position of the first pixel (``ImagePositionPatient``).
        thickness: length in mm of the third (slice normal) axis.

    Returns:
        ``(4, 4)`` ``float64``: index ``(row, column, 0)`` -> RAS mm. The defaults are ITK's placement of an
        image without geometry: rows posterior, columns to the patient's left, origin 0, 1 mm.
    """
    r, c = np.asarray(row_dir, dtype=np.float64), np.asarray(col_dir, dtype=np.float64)
    a = np.eye(4)
    a[:3, 0] = c * float(spacing[0])
    a[:3, 1] = r * float(spacing[1])
    a[:3, 2] = np.cross(r, c) * float(thickness)
    a[:3, 3] = np.asarray(origin, dtype=np.float64)
    return LPS_TO_RAS @ a


def display_axes(affine: np.ndarray, name: str = "<image>") -> tuple[tuple[int, int], tuple[bool, bool]]:
    """Where the display rows and columns come from (the rule of the module docstring).

    Args:
        affine: ``(4, 4)`` RAS affine whose columns 0 and 1 are the two in-plane axes of the stored grid.
        name: how to name the image in errors.

    Returns:
        ``(axes, flips)``: display rows are stored axis ``axes[0]``, reversed when ``flips[0]``; columns are
        stored axis ``axes[1]``, reversed when ``flips[1]``.

    Raises:
        ValueError: the in-plane axes are not finite, have zero length or are parallel.
    """
    d = np.asarray(affine, dtype=np.float64)[:3, :2]
    norms = np.linalg.norm(d, axis=0)
    if not np.isfinite(d).all() or (norms < 1e-9).any():
        raise ValueError(f"{name}: the affine's in-plane axes {d.T.round(6).tolist()} are not finite or have zero "
                         f"length; the image cannot be placed")
    u = d / norms
    if abs(float(u[:, 0] @ u[:, 1])) > 0.99:
        raise ValueError(f"{name}: the affine's in-plane axes {d.T.round(6).tolist()} are parallel")
    x, y, z = np.abs(u)  # |left-right|, |anterior-posterior|, |head-feet| of each in-plane axis
    if any(z[k] > max(x[k], y[k]) for k in (0, 1)):
        row = int(np.argmax(z))
        row_flip = bool(u[2, row] > 0)  # rows point to I (RAS z decreasing)
    else:
        row = int(np.argmax(y))
        row_flip = bool(u[1, row] > 0)  # rows point to P (RAS y decreasing)
    col = 1 - row
    col_flip = bool(u[0, col] > 0) if x[col] >= y[col] else bool(u[1, col] > 0)  # columns to L, else to P
    return (row, col), (row_flip, col_flip)


def _index_map(axes: tuple[int, ...], flips: tuple[bool, ...], src_shape: tuple[int, ...]) -> np.ndarray:
    """``(4, 4)``: homogeneous index of the reoriented array -> index of the stored one."""
    m = np.eye(4)
    m[: len(axes), : len(axes)] = 0.0
    for k, (s, f) in enumerate(zip(axes, flips)):
        m[s, k] = -1.0 if f else 1.0
        m[s, 3] = src_shape[s] - 1 if f else 0.0
    return m


def _apply(arr: np.ndarray, axes: tuple[int, ...], flips: tuple[bool, ...]) -> np.ndarray:
    """Reorient the trailing ``len(axes)`` (spatial) axes of ``arr``: new axis ``k`` = old ``axes[k]``, flipped."""
    lead = arr.ndim - len(axes)
    out = np.transpose(arr, tuple(range(lead)) + tuple(lead + a for a in axes))
    flip = tuple(lead + k for k, f in enumerate(flips) if f)
    return np.flip(out, flip) if flip else out


def to_display(arr: np.ndarray, affine: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(C, a, b)`` stored in-plane pixels with their RAS affine -> ``(C, H, W)`` display order, its world affine."""
    axes, flips = display_axes(affine, name)
    if axes != (0, 1) or any(flips):
        logger.debug("%s: stored axes %s, flips %s -> display order", name, axes, flips)
    out = np.ascontiguousarray(_apply(arr, axes, flips))
    return out, np.asarray(affine, dtype=np.float64) @ _index_map(axes, flips, arr.shape[1:])


def plane_of(data: np.ndarray, affine: np.ndarray, name: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    """The 2D image in a NIfTI / ITK array of 2 or 3 (one of them 1 long) axes, and its in-plane-first affine.

    Args:
        data: the file's array, ``(a, b)`` or ``(a, b, c)`` with one axis of length 1 (trailing length-1 axes
            beyond three, e.g. a NIfTI time axis of 1, are dropped first).
        affine: the file's voxel-to-RAS affine, ``(3, 3)`` for a 2D ITK image or ``(4, 4)``.
        name: the file, for errors.
        what: the format, for errors (``"NIfTI"``).

    Returns:
        ``(plane, affine4)``: ``(a, b)`` in the file's axis order and the ``(4, 4)`` affine whose columns 0 and 1
        are the in-plane axes and column 2 the length-1 (normal) axis.

    Raises:
        ValueError: not a single 2D image (e.g. a volume or a time series).
    """
    shape = tuple(int(s) for s in data.shape)
    a = np.asarray(affine, dtype=np.float64)
    if a.shape == (3, 3):  # 2D ITK image: lift (i, j, 1) -> (i, j, 0, 1)
        a = np.insert(np.insert(a, 2, 0.0, axis=0), 2, 0.0, axis=1)
        a[2, 2] = 1.0
    if a.shape != (4, 4):
        raise ValueError(f"{name}: {what} affine of shape {a.shape}; expected 4x4")
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        return data, _with_normal(a)
    ones = [k for k in range(data.ndim) if data.shape[k] == 1]
    if data.ndim != 3 or not ones:
        what_is = f"a {data.ndim}D image" + (" (e.g. a time series or several volumes)" if data.ndim > 3 else "")
        raise ValueError(
            f"{name}: {what} image of shape {shape} is {what_is}; expected 2 spatial dims (a 2D image "
            f"(H, W) or one slice (H, W, 1) for spatial_dims=2)"
        )
    k = ones[-1]
    keep = [i for i in range(3) if i != k]
    return np.take(data, 0, axis=k), _with_normal(a[:, keep + [k, 3]])


def _with_normal(a: np.ndarray) -> np.ndarray:
    """A zero or in-plane third (length-1) axis -> the unit plane normal, so the affine stays invertible."""
    d = a[:3, :3]
    n = np.cross(d[:, 0], d[:, 1])
    if np.linalg.norm(n) > 0 and abs(np.linalg.det(d)) <= 1e-6 * np.prod(np.linalg.norm(d, axis=0)):
        a = a.copy()
        a[:3, 2] = n / np.linalg.norm(n)
    return a


# --------------------------------------------------------------------------------------------------
# back to the input


@dataclass(frozen=True)
class InputGeometry:
    """How a map on the reader's array goes back onto the input image's own voxel grid.

    Attributes:
        affine: ``(4, 4)`` ``float64`` voxel-to-RAS affine of the input's grid (write the map with it, e.g.
            ``nibabel.Nifti1Image(geometry.to_input(map), geometry.affine)``).
        shape: spatial shape of the input's grid, in its own axis order (for 2D files the in-plane axes,
            without a length-1 third axis).
        axes: input axis ``k`` is axis ``axes[k]`` of the reader's (spatial) array ...
        flips: ... reversed when ``flips[k]``.
    """

    affine: np.ndarray
    shape: tuple[int, ...]
    axes: tuple[int, ...]
    flips: tuple[bool, ...]

    def to_input(self, arr: np.ndarray | torch.Tensor) -> np.ndarray:
        """``(..., *reader spatial shape)`` -> ``(..., *shape)`` on the input's grid (numpy, a copy)."""
        a = _numpy(arr)
        n = len(self.axes)
        expected = tuple(self.shape[self.axes.index(k)] for k in range(n))
        if a.ndim < n or tuple(a.shape[-n:]) != expected:
            raise ValueError(f"map of shape {tuple(a.shape)}; expected spatial shape {expected} (the reader's array)")
        return np.ascontiguousarray(_apply(a, self.axes, self.flips))

    def from_input(self, arr: np.ndarray | torch.Tensor) -> np.ndarray:
        """The inverse of :meth:`to_input`: ``(..., *shape)`` on the input's grid -> the reader's array order."""
        a = _numpy(arr)
        n = len(self.axes)
        if a.ndim < n or tuple(a.shape[-n:]) != tuple(self.shape):
            raise ValueError(f"array of shape {tuple(a.shape)}; expected spatial shape {tuple(self.shape)} (the input)")
        inv = tuple(self.axes.index(k) for k in range(n))
        unflipped = _apply(a, tuple(range(n)), self.flips)  # undo the flips on the input's axes, then permute
        return np.ascontiguousarray(_apply(unflipped, inv, (False,) * n))


def _numpy(arr: Any) -> np.ndarray:
    if isinstance(arr, torch.Tensor):
        return arr.detach().cpu().numpy()
    return np.asarray(arr)


def input_geometry(image: Any, path: str | os.PathLike | None = None) -> InputGeometry:
    """The input file's own grid and affine, and the way from the reader's array onto it.

    Use it to return a map (saliency, segmentation) computed on the reader's array in the input's geometry,
    e.g. to a viewer that sent a NIfTI::

        raw = ReadImage(spatial_dims=2)(path)          # (1, H, W), display order
        ...                                            # heat: (H, W) on raw's grid
        g = input_geometry(raw, path)
        nibabel.save(nibabel.Nifti1Image(g.to_input(heat), g.affine), "map.nii.gz")   # the input's voxel grid

    Maps computed on a resized / resampled tensor must first be resampled onto the reader's grid (e.g.
    :class:`monai.transforms.ResampleToMatch` with the reader's tensor as destination). For DICOM, PNG and
    arrays the "input grid" is the stored ``(rows, columns)`` pixel order (3D DICOM: ``(columns, rows, slices)``,
    the order ITK uses) with the affine from the DICOM geometry (ITK's placement where there is none).

    Args:
        image: the :class:`~monai.data.MetaTensor` returned by :class:`~medclass.transforms.ReadImage` (or a
            ``ReadImaged`` item's image) for this input. In 3D it may also have been reoriented since (e.g. by
            the ``ct`` / ``mr`` presets' ``Orientationd``): its ``affine`` is then used.
        path: the input file, to check that ``image`` was read from it (optional).

    Returns:
        An :class:`InputGeometry`.

    Raises:
        TypeError: ``image`` is not a MetaTensor.
        ValueError: ``image`` was read from another file, lacks the reader's metadata, or is not on the input's
            voxel grid (resized or resampled). The message names the file.
    """
    from monai.data import MetaTensor

    if not isinstance(image, MetaTensor):
        raise TypeError(f"input_geometry needs the reader's MetaTensor, got {type(image).__name__}")
    meta = image.meta
    name = str(meta.get("filename_or_obj", "<image>"))
    if path is not None:
        given = Path(path).expanduser()
        if given.resolve() != Path(name).expanduser().resolve():
            raise ValueError(f"{given}: the image was read from {name}, not from this file")
    if "source_affine" not in meta or "world_affine" not in meta:
        raise ValueError(f"{name}: the image has no source_affine / world_affine metadata (read it with ReadImage)")
    nd = image.ndim - 1
    src = np.asarray(_numpy(meta["source_affine"]), dtype=np.float64)
    src_shape = tuple(int(s) for s in _numpy(meta["original_shape"]))
    # 3D: the current affine (it follows Orientation); 2D: the reader's world affine (MetaTensor.affine is the
    # in-plane pixel affine there)
    cur = np.asarray(_numpy(image.affine if nd == 3 else meta["world_affine"]), dtype=np.float64)
    if src.shape != (4, 4) or cur.shape != (4, 4) or len(src_shape) != nd:
        raise ValueError(f"{name}: unexpected geometry metadata for a {nd}D image (source shape {src_shape})")
    try:
        m = np.linalg.solve(src, cur)  # reader index -> input index
    except np.linalg.LinAlgError:
        raise ValueError(f"{name}: the input's affine {src.round(6).tolist()} is singular") from None
    rot = m[:nd, :nd]
    perm = np.rint(rot)
    ok = np.allclose(rot, perm, atol=_ATOL) and (np.abs(perm).sum(axis=0) == 1).all() and (
        np.abs(perm).sum(axis=1) == 1).all()
    axes, flips = [], []
    if ok:
        cur_shape = tuple(int(s) for s in image.shape[1:])
        for s in range(nd):
            k = int(np.argmax(np.abs(perm[s])))
            flip = bool(perm[s, k] < 0)
            want = src_shape[s] - 1 if flip else 0.0
            ok = ok and abs(m[s, 3] - want) < _ATOL and cur_shape[k] == src_shape[s]
            axes.append(k)
            flips.append(flip)
    if not ok:
        raise ValueError(
            f"{name}: the image (shape {tuple(image.shape[1:])}) is not on the input's voxel grid (shape "
            f"{src_shape}), e.g. it was resized or resampled; resample the map onto the reader's grid first"
        )
    return InputGeometry(affine=src, shape=src_shape, axes=tuple(axes), flips=tuple(flips))

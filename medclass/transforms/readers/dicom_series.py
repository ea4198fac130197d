"""DICOM series given as a folder of slices: one validated volume (see :class:`DicomSeriesReader`)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from medclass.transforms.readers.base import Loaded, MedclassImageReader, expected, has_dicom_magic, luminance
from medclass.transforms.readers.dicom import (
    dcmread,
    ensure_transfer_syntax,
    modality_range,
    read_dicom_file,
    rescale_of,
    to_ijk,
    voi_and_polarity,
    volume_meta,
)
from medclass.transforms.readers.dicom_geometry import (
    ORIENTATION_ATOL,
    directions,
    floats,
    lps_to_ras_affine,
    pixel_spacing,
    slice_spacing,
    sort_slices,
)

logger = logging.getLogger(__name__)

__all__ = ["DicomSeriesReader", "series_header", "series_id"]


def series_header(path: Path, name: str):
    """``(header, None)`` for a DICOM image file, ``(None, reason)`` for a file to skip.

    A file with the ``DICM`` magic that cannot be parsed raises: a broken slice makes the series
    incomplete, it is not a stray file. Files without the magic are tried as old (ACR-NEMA style)
    DICOM and skipped when that fails, whatever their suffix (e.g. macOS ``._IM0001.dcm`` resource
    files); a real slice lost that way still shows up as a missing slice.
    """
    import pydicom

    try:
        if path.stat().st_size == 0:
            return None, "empty file"
    except OSError as e:
        return None, f"cannot stat ({e})"
    magic = has_dicom_magic(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=not magic)
        has_image = "Rows" in ds and "Columns" in ds
        if has_image:
            int(ds.Rows), int(ds.Columns)
    except Exception as e:
        if magic:
            raise ValueError(f"{name}: cannot read DICOM file {path.name} ({type(e).__name__}: {e})") from e
        return None, "not a DICOM file"
    if not has_image:
        if magic or "SOPClassUID" in ds:
            return None, "a DICOM file without an image (e.g. DICOMDIR, report or presentation state)"
        return None, "not a DICOM file"
    return ds, None


def series_id(ds) -> str:
    """The ``SeriesInstanceUID`` (``""`` when absent)."""
    return str(ds.get("SeriesInstanceUID", "") or "")


class DicomSeriesReader(MedclassImageReader):
    """A folder holding one DICOM series -> ``(1, columns, rows, slices)`` ``float32``, meta, RAS affine (3D only).

    Slices are ordered by position along the slice normal (``ImagePositionPatient`` . normal), not by
    file name or ``InstanceNumber``; the series is validated (one series, one size / orientation /
    pixel spacing, no duplicated positions, no missing slices, even spacing). Files that are not
    DICOM images (``.txt``, ``.DS_Store``, ``DICOMDIR``, ...) and subfolders are skipped with a warning; each slice
    gets its own modality LUT (rescale); the middle slice's VOI / photometric elements apply to the volume.
    """

    def verify_suffix(self, filename: Any) -> bool:
        names = filename if isinstance(filename, (list, tuple)) else [filename]
        return all(Path(f).is_dir() for f in names)

    def read(self, data: Any, **kwargs: Any) -> Loaded:
        """The headers of the folder's DICOM image files ``[(path, header)]`` (pixels are read by :meth:`decode`)."""
        folder = self.path_of(data)
        name = str(folder)
        if self.spatial_dims != 3:
            raise ValueError(
                f"{name}: DICOM series folders are volumes and need spatial_dims=3, got {self.spatial_dims}")
        headers: list[tuple[Path, Any]] = []
        entries = sorted(folder.iterdir())
        for p in entries:
            if p.is_dir():
                logger.warning("%s: skipping subfolder %s (a series folder is read without recursion)", name, p.name)
                continue
            ds, reason = series_header(p, name)
            if ds is None:
                logger.warning("%s: skipping %s: %s", name, p.name, reason)
                continue
            headers.append((p, ds))
        if not headers:
            raise ValueError(f"{name}: no DICOM image files in the folder ({len(entries)} entries)")
        return Loaded(headers, name)

    def decode(self, img: Loaded) -> tuple[np.ndarray, dict[str, Any], np.ndarray | None]:
        from pydicom.pixels import apply_modality_lut

        headers, name = img
        voi = self.voi
        # one series
        by_series: dict[str, list[Path]] = {}
        for p, ds in headers:
            by_series.setdefault(series_id(ds), []).append(p)
        if len(by_series) > 1:
            parts = []
            for uid, files in by_series.items():
                ds = next(d for q, d in headers if q == files[0])
                desc = str(ds.get("SeriesDescription", "") or "").strip()
                parts.append(
                    f"series {ds.get('SeriesNumber', '?')}{' ' + repr(desc) if desc else ''} "
                    f"(UID ...{uid[-8:] if uid else '<none>'}): {len(files)} file(s), e.g. {files[0].name}"
                )
            raise ValueError(
                f"{name}: mixed series: the folder holds {len(by_series)} series (different SeriesInstanceUID): "
                f"{'; '.join(parts)}; put each series in its own folder"
            )

        # a single multi-frame file
        multi = [p for p, ds in headers if int(ds.get("NumberOfFrames", 1) or 1) > 1]
        if multi:
            if len(headers) == 1:
                arr, meta, affine = read_dicom_file(multi[0], 3, voi)
                return arr, meta, affine
            raise ValueError(
                f"{name}: a series folder holds either single-frame slices or one multi-frame file, found "
                f"{len(multi)} multi-frame file(s) (e.g. {multi[0].name}) among {len(headers)} DICOM files"
            )
        if len(headers) == 1:
            p, ds = headers[0]
            raise ValueError(
                f"{name}: the series has a single slice ({p.name}, {int(ds.Rows)}x{int(ds.Columns)}): a 2D image; "
                f"expected {expected(3)}"
            )

        # one slice size, orientation and pixel spacing
        sizes: dict[tuple[int, int], list[str]] = {}
        for p, ds in headers:
            sizes.setdefault((int(ds.Rows), int(ds.Columns)), []).append(p.name)
        if len(sizes) > 1:
            desc = "; ".join(f"{r}x{c}: {len(f)} file(s), e.g. {f[0]}" for (r, c), f in sizes.items())
            raise ValueError(f"{name}: slices of different size (rows x columns): {desc}")
        rows, cols = next(iter(sizes))
        labels = [p.name for p, _ in headers]
        iops = [floats(ds.get("ImageOrientationPatient", None) or [], 6) for _, ds in headers]
        ipps = [floats(ds.get("ImagePositionPatient", None) or [], 3) for _, ds in headers]
        spacings = [pixel_spacing(ds) for _, ds in headers]
        row_col = spacings[0] or (1.0, 1.0)
        for lab, sp in zip(labels, spacings):
            if not np.allclose(sp or (1.0, 1.0), row_col, rtol=1e-3):
                raise ValueError(
                    f"{name}: slices of different pixel spacing: {lab} has {sp}, {labels[0]} has {spacings[0]} (mm)"
                )

        if any(o is not None for o in iops) or any(p is not None for p in ipps):
            for what, vals in (("ImageOrientationPatient", iops), ("ImagePositionPatient", ipps)):
                missing = [lab for lab, v in zip(labels, vals) if v is None]
                if missing:
                    raise ValueError(
                        f"{name}: {len(missing)} slice(s) have no valid {what} (e.g. {missing[0]}); the slices cannot "
                        f"be placed in space"
                    )
            ref = iops[0]
            for lab, o in zip(labels, iops):
                if np.abs(o - ref).max() > ORIENTATION_ATOL:
                    raise ValueError(
                        f"{name}: slices of different orientation: {lab} has ImageOrientationPatient "
                        f"{np.round(o, 4).tolist()}, {labels[0]} has {np.round(ref, 4).tolist()}"
                    )
            r, c, n = directions(ref, name)
            positions = np.stack(ipps)
            order, step = sort_slices(positions, n, labels, name, min(row_col))
            origin = positions[order[0]]
        else:
            # no geometry at all (e.g. secondary capture): InstanceNumber order, assumed axial
            numbers = []
            for lab, (_, ds) in zip(labels, headers):
                try:
                    numbers.append(int(ds.InstanceNumber))
                except (AttributeError, TypeError, ValueError):
                    raise ValueError(
                        f"{name}: {lab} has neither ImagePositionPatient nor InstanceNumber; the slices cannot be "
                        "ordered"
                    ) from None
            if len(set(numbers)) != len(numbers):
                raise ValueError(
                    f"{name}: no slice positions and duplicated InstanceNumber values; cannot order the slices")
            thickness = slice_spacing(headers[0][1]) or 1.0
            logger.warning(
                "%s: no ImagePositionPatient / ImageOrientationPatient; slices ordered by InstanceNumber as an axial "
                "stack %s mm apart",
                name, thickness,
            )
            order = np.argsort(numbers, kind="stable")
            r, c = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
            step = np.array([0.0, 0.0, thickness])
            origin = np.zeros(3)

        # pixels, slice by slice (each with its own modality LUT / rescale)
        ordered = [headers[i][0] for i in order]
        stack = np.empty((len(ordered), rows, cols), dtype=np.float32)
        modality_stack = None
        lo = hi = None
        rescaled = False
        first_dtype = None
        ref_ds = None
        for k, p in enumerate(ordered):
            try:
                ds = dcmread(p)
                ensure_transfer_syntax(ds)
                stored = ds.pixel_array
            except Exception as e:
                raise ValueError(f"{name}: cannot read slice {p.name} ({type(e).__name__}: {e})") from e
            samples = int(ds.get("SamplesPerPixel", 1) or 1)
            if samples > 1:
                values = luminance(stored)
            else:
                if stored.shape != (rows, cols):
                    raise ValueError(
                        f"{name}: slice {p.name} has pixel array shape {stored.shape}, expected {(rows, cols)}")
                mod = np.asarray(apply_modality_lut(stored, ds))
                values = mod
                slope, intercept = rescale_of(ds)
                rescaled = rescaled or bool("ModalityLUTSequence" in ds or slope != 1 or intercept != 0)
                s_lo, s_hi = modality_range(ds, mod)
                lo = s_lo if lo is None else min(lo, s_lo)
                hi = s_hi if hi is None else max(hi, s_hi)
                if "ModalityLUTSequence" in ds or "VOILUTSequence" in ds:
                    if modality_stack is None:
                        modality_stack = np.empty((len(ordered), rows, cols), dtype=mod.dtype)
                    modality_stack[k] = mod
            stack[k] = values
            if first_dtype is None:
                first_dtype = stored.dtype
            if k == len(ordered) // 2:
                ref_ds = ds  # VOI / photometric elements from the middle slice

        affine = lps_to_ras_affine(r, c, step, origin, row_col)
        meta = volume_meta(name, ref_ds, first_dtype, (cols, rows, len(ordered)), affine, instance=False)
        meta["rescaled"] = rescaled
        if int(ref_ds.get("SamplesPerPixel", 1) or 1) == 1:
            mod_values = modality_stack if modality_stack is not None else stack
            stack = voi_and_polarity(stack, mod_values, ref_ds, voi, name, meta, (lo, hi))
        logger.debug("%s: %d slices, %dx%d, spacing %s mm", name, len(ordered), rows, cols, meta["spacing"])
        return to_ijk(stack), meta, affine

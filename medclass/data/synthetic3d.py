"""Offline CT-like volume phantoms with planted findings and masks (the 3D bundle's default dataset).

Each volume is in Hounsfield units: air around an elliptic body (soft tissue with a fat rim), a vertebral
body (bone), and an organ (liver-like, ~55 HU) with smooth texture and noise, at a random pose. Findings are
planted inside the organ independently per label:

* ``mass``: an enhancing solid sphere (~135 HU, radius 5-7 voxels at 48^3);
* ``cyst``: a water-density sphere (~0 HU, radius 4-6 voxels at 48^3) with a sharp edge;
* ``calcification``: a small very dense focus (~700 HU, radius 1.5-2.5 voxels at 48^3).

Radii scale with the volume size (the same anatomy at every size). Version 2 made the findings larger and more
conspicuous than version 1: with version 1 the bundle's default model did not learn cyst or calcification from
200 volumes (validation AUC at chance after 15 epochs), so saliency could not be scored against the masks.

Global intensity statistics do not reveal the findings (organ density, noise and pose vary). Each patient has
1-2 studies sharing anatomy and findings, so splits must be patient-disjoint. Files: ``images/<id>.nii.gz``
(int16 HU, 1.5 mm isotropic, RAS affine), ``masks/<id>_<label>.nii.gz`` (uint8), ``datalist.csv`` with
``id,image,patient_id,<label columns>,mask_<label>``, and ``phantoms.json`` with the parameters.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from medclass.data.synthetic import check_phantom_args
from medclass.files import atomic_json, atomic_write

logger = logging.getLogger(__name__)

VOLUME_PHANTOM_LABELS: tuple[str, ...] = ("mass", "cyst", "calcification")
VOLUME_PHANTOM_VERSION = 2
# finding: (HU, (min, max) radius in voxels at size 48; scaled with the volume size)
FINDINGS = {"mass": (135.0, (5.0, 7.0)), "cyst": (0.0, (4.0, 6.0)), "calcification": (700.0, (1.5, 2.5))}
SPACING_MM = 1.5

_CSV_NAME = "datalist.csv"
_PARAMS_NAME = "phantoms.json"


def _params(n, size, seed, prevalence, label_names) -> dict:
    names = check_phantom_args(label_names, VOLUME_PHANTOM_LABELS, n, size, 24, "volume phantom", "voxels")
    if not 0.0 <= float(prevalence) <= 1.0:
        raise ValueError(f"volume phantom prevalence {prevalence!r} must be in [0, 1]")
    return {"version": VOLUME_PHANTOM_VERSION, "n": int(n), "size": int(size), "seed": int(seed),
            "prevalence": float(prevalence), "label_names": names}


def _smooth(rng: np.random.Generator, size: int, cells: int = 4) -> np.ndarray:
    """Low-frequency noise ~[-1, 1] of shape (size,)*3: a coarse random grid, trilinearly upsampled."""
    coarse = rng.standard_normal((cells,) * 3).astype(np.float32)
    idx = np.linspace(0, cells - 1, size, dtype=np.float32)
    i0 = np.clip(np.floor(idx).astype(int), 0, cells - 2)
    f = idx - i0
    out = coarse
    for axis in range(3):
        a = np.take(out, i0, axis=axis)
        b = np.take(out, i0 + 1, axis=axis)
        shape = [1, 1, 1]
        shape[axis] = size
        w = f.reshape(shape)
        out = a * (1 - w) + b * w
    return out / 1.5


def _volume(rng, size, findings: dict[str, bool], anatomy: dict) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    g = (np.arange(size, dtype=np.float32) + 0.5) / size  # voxel centres in [0, 1]
    x, y, z = np.meshgrid(g, g, g, indexing="ij")
    cx, cy = 0.5 + anatomy["shift"][0], 0.5 + anatomy["shift"][1]
    body = ((x - cx) / anatomy["body"][0]) ** 2 + ((y - cy) / anatomy["body"][1]) ** 2 < 1
    inner = ((x - cx) / (anatomy["body"][0] - 0.04)) ** 2 + ((y - cy) / (anatomy["body"][1] - 0.04)) ** 2 < 1
    vol = np.full((size,) * 3, -1000.0, dtype=np.float32)
    vol[body] = -100.0  # fat rim
    vol[inner] = 40.0 + 8.0 * _smooth(rng, size)[inner]
    spine = ((x - cx) / 0.07) ** 2 + ((y - (cy - anatomy["body"][1] + 0.13)) / 0.07) ** 2 < 1
    vol[spine & inner] = 400.0
    oc = anatomy["organ_c"]
    organ = ((x - oc[0]) / anatomy["organ_r"][0]) ** 2 + ((y - oc[1]) / anatomy["organ_r"][1]) ** 2 + \
        ((z - oc[2]) / anatomy["organ_r"][2]) ** 2 < 1
    organ &= inner
    vol[organ] = anatomy["organ_hu"] + 10.0 * _smooth(rng, size)[organ]
    masks = {}
    organ_idx = np.argwhere(organ)
    for name, present in findings.items():
        if not present:
            continue
        hu, (rmin, rmax) = FINDINGS[name]
        r = rng.uniform(rmin, rmax) / 48  # radius as a fraction of the field of view
        # a centre whose sphere stays inside the organ, clear of the other findings; where the organ is too
        # crowded, a smaller sphere (never an empty mask under a positive label)
        for attempt in range(200):
            rr = r * (1.0 - 0.4 * (attempt // 50) / 3)
            c = (organ_idx[rng.integers(len(organ_idx))] + 0.5) / size
            sphere = ((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) < rr ** 2
            clear = not any((sphere & m).any() for m in masks.values())
            if sphere.sum() and clear and (sphere & organ).sum() >= 0.9 * sphere.sum():
                break
        for m in masks.values():  # (no clear spot found: keep the masks disjoint all the same)
            sphere &= ~m
        vol[sphere] = hu + 6.0 * rng.standard_normal(int(sphere.sum()))
        masks[name] = sphere
    vol += rng.normal(0.0, anatomy["noise"], vol.shape).astype(np.float32)
    return np.clip(vol, -1024, 3000), masks


def make_volume_phantoms(out_dir: str | os.PathLike, n: int = 200, size: int = 48, seed: int = 0,
                         prevalence: float = 0.35, label_names: Sequence[str] = VOLUME_PHANTOM_LABELS) -> Path:
    """Write ``n`` CT-like phantom volumes with planted findings, their masks and ``datalist.csv``.

    Args:
        out_dir: output folder (created).
        n: number of volumes.
        size: edge length in voxels (volumes are ``size``^3 at 1.5 mm).
        seed: random seed (the same seed gives the same files).
        prevalence: chance of each finding per patient.
        label_names: which findings to plant, in label order.

    Returns:
        The path of ``datalist.csv``.
    """
    params = _params(n, size, seed, prevalence, label_names)
    out = Path(out_dir).expanduser()
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    (out / _PARAMS_NAME).unlink(missing_ok=True)
    rng = np.random.default_rng(seed)
    affine = np.diag([SPACING_MM, SPACING_MM, SPACING_MM, 1.0])
    names = params["label_names"]
    rows, k, patient = [], 0, 0
    while k < n:
        anatomy = {"shift": rng.uniform(-0.04, 0.04, 2), "body": rng.uniform([0.38, 0.30], [0.44, 0.36]),
                   "organ_c": [rng.uniform(0.38, 0.55), rng.uniform(0.45, 0.58), rng.uniform(0.4, 0.6)],
                   "organ_r": rng.uniform([0.17, 0.14, 0.22], [0.22, 0.18, 0.3]),
                   "organ_hu": rng.uniform(45, 65), "noise": rng.uniform(6, 12)}
        findings = {name: bool(rng.random() < params["prevalence"]) for name in names}
        for _ in range(int(rng.integers(1, 3))):
            if k >= n:
                break
            image_id = f"vphantom_{k:05d}"
            vol, masks = _volume(rng, size, findings, anatomy)
            nib.save(nib.Nifti1Image(vol.astype(np.int16), affine), out / "images" / f"{image_id}.nii.gz")
            row = {"id": image_id, "image": f"images/{image_id}.nii.gz", "patient_id": f"vpatient_{patient:04d}"}
            for name in names:
                row[name] = int(findings[name])
            for name in names:
                rel = ""
                if name in masks:
                    rel = f"masks/{image_id}_{name}.nii.gz"
                    nib.save(nib.Nifti1Image(masks[name].astype(np.uint8), affine), out / rel)
                row[f"mask_{name}"] = rel
            rows.append(row)
            k += 1
        patient += 1
    csv_path = out / _CSV_NAME
    with atomic_write(csv_path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    atomic_json(out / _PARAMS_NAME, params, indent=1)
    counts = {name: sum(r[name] for r in rows) for name in names}
    logger.info("volume phantoms: %d volumes of %d patients in %s, positives %s", n, patient, out, counts)
    return csv_path


def ensure_volume_phantoms(out_dir: str | os.PathLike, n: int = 200, size: int = 48, seed: int = 0,
                           prevalence: float = 0.35, label_names: Sequence[str] = VOLUME_PHANTOM_LABELS) -> Path:
    """The phantom ``datalist.csv`` in ``out_dir``, generated only when missing or made with other parameters."""
    params = _params(n, size, seed, prevalence, label_names)
    out = Path(out_dir).expanduser()
    csv_path = out / _CSV_NAME
    try:
        stored = json.loads((out / _PARAMS_NAME).read_text())
    except (OSError, ValueError):
        stored = None
    if stored == params and csv_path.is_file():
        with open(csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
        if len(rows) == n and all((out / r["image"]).is_file() for r in rows):
            return csv_path
    return make_volume_phantoms(out, **{k: v for k, v in params.items() if k != "version"})

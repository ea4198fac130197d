"""Offline chest-radiograph-like phantoms with planted findings and masks (the default bundle's dataset).

Each image is a frontal "chest" drawn from simple shapes: a bright body, two darker lung fields with rib
shadows and vessel-like texture, mediastinum and spine, and a heart; then random pose (rotation, scale,
shift), contrast, gamma and noise. Findings are planted independently per label:

* ``nodule``: a small bright round blob inside a lung;
* ``effusion``: bright fluid filling a lung base, its top rising laterally (meniscus);
* ``cardiomegaly``: the heart clearly enlarged (cardiothoracic ratio 0.58-0.68 instead of 0.38-0.47);
* ``pneumothorax``: a dark region without lung texture at a lung apex, bounded by a bright pleural line.

Each patient has 1-3 images that share anatomy and (mostly) findings, so a split that is not
patient-disjoint leaks. Global intensity alone does not reveal the findings (contrast and gamma jitter).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medclass.files import atomic_json, atomic_write

logger = logging.getLogger(__name__)

__all__ = ["PHANTOM_LABELS", "PHANTOM_VERSION", "ensure_phantoms", "make_phantoms"]

#: The findings phantoms can hold, in default label order.
PHANTOM_LABELS: tuple[str, ...] = ("nodule", "effusion", "cardiomegaly", "pneumothorax")
#: Bumped whenever the drawing changes, so :func:`ensure_phantoms` regenerates old sets.
PHANTOM_VERSION = 2  # 2: the pneumothorax mask includes its pleural line

_CSV_NAME = "datalist.csv"
_PARAMS_NAME = "phantoms.json"
_KEEP_FINDING = 0.85  # chance that a follow-up image keeps the patient's finding status


def _ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv: float, au: float, av: float) -> np.ndarray:
    """Normalized ellipse radius squared: < 1 inside."""
    return ((u - cu) / au) ** 2 + ((v - cv) / av) ** 2


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1] approx., shape (size, size): random values on a cells x cells grid, upsampled."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    img = Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.float32) / 1.5


class _Patient:
    """Anatomy and finding parameters shared by a patient's images (canonical coordinates, image size = 1)."""

    def __init__(self, rng: np.random.Generator, label_names: Sequence[str], prevalence: Mapping[str, float]) -> None:
        self.thorax_a = rng.uniform(0.34, 0.40)  # half-width of the thorax
        self.thorax_b = rng.uniform(0.40, 0.45)
        self.lung_a = self.thorax_a * rng.uniform(0.36, 0.42)
        self.lung_b = self.thorax_b * rng.uniform(0.68, 0.76)
        self.lung_gap = rng.uniform(0.07, 0.09)  # half-distance between the lungs' inner edges
        self.lung_v = rng.uniform(-0.06, -0.02)
        self.normal_ctr = rng.uniform(0.38, 0.47)
        self.large_ctr = rng.uniform(0.58, 0.68)
        self.heart_v = rng.uniform(0.10, 0.14)
        self.findings = {name: bool(rng.random() < prevalence[name]) for name in label_names}
        self.nodule_side = int(rng.integers(2))
        self.nodule_pos = (rng.uniform(0.15, 0.7), rng.uniform(-0.55, 0.35))  # lateral, vertical (lung units)
        self.nodule_r = rng.uniform(0.025, 0.04)
        self.effusion_sides = [int(rng.integers(2))] if rng.random() < 0.75 else [0, 1]
        self.effusion_height = rng.uniform(0.28, 0.45)
        self.ptx_side = int(rng.integers(2))
        self.ptx_k = rng.uniform(0.62, 0.76)


def _draw(
    patient: _Patient, present: Mapping[str, bool], size: int, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One image (uint8, (size, size)) and the masks (bool, (size, size)) of its planted findings."""
    # pose: canonical coordinates (u right, v down, image size 1) of every pixel
    angle = math.radians(rng.uniform(-7.0, 7.0))
    scale = rng.uniform(0.92, 1.06)
    shift_u, shift_v = rng.uniform(-0.04, 0.04, size=2)
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    y, x = np.meshgrid(coords - shift_v, coords - shift_u, indexing="ij")
    cos, sin = math.cos(angle), math.sin(angle)
    u = (cos * x + sin * y) / scale
    v = (-sin * x + cos * y) / scale

    body = _ellipse(u, v, 0.0, 0.03, patient.thorax_a, patient.thorax_b) < 1
    # shoulders / neck: widen the body at the top
    body |= (np.abs(u) < patient.thorax_a * 1.05) & (v < -0.25) & (v > -0.48)
    img = np.where(body, 0.56, 0.07).astype(np.float32)

    lungs = []
    for side in (0, 1):  # 0: image left, 1: image right
        sign = -1.0 if side == 0 else 1.0
        cu = sign * (patient.lung_gap + patient.lung_a)
        lung = _ellipse(u, v, cu, patient.lung_v, patient.lung_a, patient.lung_b)
        lungs.append((cu, sign, lung))
    lung_mask = (lungs[0][2] < 1) | (lungs[1][2] < 1)
    texture = 0.05 * _smooth_noise(rng, size, 12) + 0.025 * _smooth_noise(rng, size, 32)
    ribs = np.clip(np.sin(2 * math.pi * (v - 1.6 * u * u) / 0.075 + rng.uniform(0, 2 * math.pi)), 0.55, 1.0) - 0.55
    lung_value = 0.2 + texture + 0.18 * ribs
    img = np.where(lung_mask, lung_value, img)

    spine = body & (np.abs(u) < 0.032)
    vertebrae = 0.05 * (np.sin(2 * math.pi * v / 0.06) > 0.6)
    img = np.where(spine, 0.68 + vertebrae, img)

    masks: dict[str, np.ndarray] = {}
    ctr = patient.large_ctr if present.get("cardiomegaly") else patient.normal_ctr
    heart_a = ctr * patient.thorax_a
    heart = _ellipse(u, v, 0.25 * heart_a, patient.heart_v, heart_a, rng.uniform(0.115, 0.13)) < 1
    heart &= v > -0.08 - 0.3 * heart_a  # flat top where the great vessels start
    img = np.where(heart, 0.63, img)
    if present.get("cardiomegaly"):
        masks["cardiomegaly"] = heart

    if present.get("pneumothorax"):
        cu, sign, lung = lungs[patient.ptx_side]
        k = patient.ptx_k
        # the collapsed lung shrinks toward the medial base, leaving an apical-lateral crescent of air
        cu_c = cu - sign * (1 - k) * patient.lung_a
        cv_c = patient.lung_v + (1 - k) * patient.lung_b
        collapsed = _ellipse(u, v, cu_c, cv_c, k * patient.lung_a, k * patient.lung_b)
        region = (lung < 1) & (collapsed >= 1) & (v < cv_c) & ~heart
        edge = (np.abs(np.sqrt(collapsed) - 1) < 1.3 / (size * k * patient.lung_a)) & (lung < 1) & (v < cv_c)
        img = np.where(region, 0.1 + 0.01 * texture, img)
        line = edge & ~region & ~heart
        img = np.where(line, img + 0.22, img)
        # the finding is the air and the visceral pleural line that bounds it (the sign a reader looks for)
        masks["pneumothorax"] = region | line

    if present.get("effusion"):
        fluid_all = np.zeros_like(body)
        for side in patient.effusion_sides:
            cu, sign, lung = lungs[side]
            lateral = np.clip(sign * (u - cu) / patient.lung_a, -1, 1)  # +1 at the lateral edge
            base = patient.lung_v + patient.lung_b
            top = base - 2 * patient.lung_b * patient.effusion_height - 0.08 * ((lateral + 1) / 2) ** 2
            fluid = (lung < 1) & (v > top) & ~heart
            depth = np.clip((v - top) / 0.05, 0, 1)
            img = np.where(fluid, (1 - depth) * img + depth * 0.55 + 0.08 * depth * (v - top), img)
            fluid_all |= fluid
        masks["effusion"] = fluid_all

    if present.get("nodule"):
        cu, sign, lung = lungs[patient.nodule_side]
        lat, ver = patient.nodule_pos
        r = patient.nodule_r
        nu = cu + sign * lat * patient.lung_a * 0.8 + rng.uniform(-0.01, 0.01)
        nv = patient.lung_v + ver * patient.lung_b + rng.uniform(-0.01, 0.01)
        blocked = heart | masks.get("effusion", np.zeros_like(body)) | masks.get("pneumothorax", np.zeros_like(body))
        d2 = (u - nu) ** 2 + (v - nv) ** 2
        inside = (lung < 1) & ~blocked
        free = np.flatnonzero(inside)
        if not np.any(inside & (d2 < r * r)) and free.size:
            # the planned spot is covered (heart, fluid, air): use the free lung pixel nearest to it
            j = free[np.argmin(d2.reshape(-1)[free])]
            nu, nv = float(u.reshape(-1)[j]), float(v.reshape(-1)[j])
            d2 = (u - nu) ** 2 + (v - nv) ** 2
        if free.size:  # (no free lung at all: no nodule, and the label says so)
            blob = np.clip(1 - d2 / (r * r), 0, 1)
            img = img + 0.36 * np.sqrt(blob)
            masks["nodule"] = d2 < r * r

    # acquisition: contrast, gamma, offset, blur-free noise
    img = np.clip(img, 0, 1)
    img = img ** rng.uniform(0.75, 1.3)
    img = img * rng.uniform(0.8, 1.15) + rng.uniform(-0.06, 0.08)
    img = img + rng.normal(0, rng.uniform(0.015, 0.035), size=img.shape).astype(np.float32)
    out = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    return out, {name: m for name, m in masks.items() if m.any()}


def check_phantom_args(label_names: Sequence[str], allowed: Sequence[str], n, size, min_size: int,
                       what: str = "phantom", unit: str = "pixels") -> list[str]:
    """Validate phantom label names, count and size (shared by the 2D and 3D generators); returns the names."""
    names = [str(name) for name in label_names]
    unknown = [name for name in names if name not in allowed]
    if not names or unknown or len(set(names)) != len(names):
        raise ValueError(f"{what} label_names {names} must be distinct names among {list(allowed)}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{what} count n={n!r} must be a positive integer")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < min_size:
        raise ValueError(f"{what} size={size!r} must be an integer >= {min_size} ({unit})")
    return names


def _params(n: int, size: int, seed: int, prevalence: float | Mapping[str, float], label_names: Sequence[str]) -> dict:
    names = check_phantom_args(label_names, PHANTOM_LABELS, n, size, 32)
    if isinstance(prevalence, Mapping):
        missing = [name for name in names if name not in prevalence]
        if missing:
            raise ValueError(f"phantom prevalence {dict(prevalence)} lacks labels {missing}")
        prev = {name: float(prevalence[name]) for name in names}
    else:
        prev = {name: float(prevalence) for name in names}
    bad = {k: p for k, p in prev.items() if not 0.0 <= p <= 1.0}
    if bad:
        raise ValueError(f"phantom prevalence {bad} must be in [0, 1]")
    return {
        "version": PHANTOM_VERSION,
        "n": int(n),
        "size": int(size),
        "seed": int(seed),
        "prevalence": prev,
        "label_names": names,
    }


def make_phantoms(
    out_dir: str | os.PathLike,
    n: int = 600,
    size: int = 128,
    seed: int = 0,
    prevalence: float | Mapping[str, float] = 0.3,
    label_names: Sequence[str] = PHANTOM_LABELS,
) -> Path:
    """Write ``n`` phantom chest images with planted findings, their masks and a datalist CSV.

    Layout of ``out_dir``::

        images/phantom_00000.png           8-bit grayscale, (size, size)
        masks/phantom_00000_nodule.png     255 inside the finding, 0 outside; only for planted findings
        datalist.csv                       id,image,patient_id,<label 0/1 columns>,mask_<label> (blank if absent)
        phantoms.json                      the parameters (written last: its presence marks a complete set)

    Patients (``patient_0000``...) have 1-3 images each; a follow-up image keeps each of the patient's finding
    states with probability 0.85, else redraws it, so the per-image prevalence stays ``prevalence``.

    Args:
        out_dir: output folder (created).
        n: number of images.
        size: image side in pixels (>= 32).
        seed: random seed; the same parameters give the same files.
        prevalence: probability of each finding per image, in [0, 1]; one number or ``{label: p}``.
        label_names: findings to plant, a subset of :data:`PHANTOM_LABELS`; also the CSV's label columns.

    Returns:
        The path of ``datalist.csv`` (load it with ``load_datalist``; labels are found through their mask columns).

    Raises:
        ValueError: unknown label names or out-of-range parameters.
    """
    params = _params(n, size, seed, prevalence, label_names)
    names = params["label_names"]
    prev = params["prevalence"]
    out = Path(out_dir).expanduser()
    (out / _PARAMS_NAME).unlink(missing_ok=True)
    for sub in ("images", "masks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for old in (out / sub).glob("phantom_*.png"):  # a previous set; nothing else is touched
            old.unlink()
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    counts = dict.fromkeys(names, 0)
    patient_no = 0
    while len(rows) < n:
        patient = _Patient(rng, names, prev)
        pid = f"patient_{patient_no:04d}"
        patient_no += 1
        for _ in range(min(int(rng.integers(1, 4)), n - len(rows))):
            present = {
                name: patient.findings[name] if rng.random() < _KEEP_FINDING else bool(rng.random() < prev[name])
                for name in names
            }
            image, masks = _draw(patient, present, size, rng)
            image_id = f"phantom_{len(rows):05d}"
            Image.fromarray(image).save(out / "images" / f"{image_id}.png", compress_level=1)
            row: dict[str, Any] = {"id": image_id, "image": f"images/{image_id}.png", "patient_id": pid}
            for name in names:
                mask = masks.get(name)
                row[name] = int(mask is not None)
                row[f"mask_{name}"] = ""
                if mask is not None:
                    rel = f"masks/{image_id}_{name}.png"
                    Image.fromarray(mask.astype(np.uint8) * 255).save(out / rel, compress_level=1)
                    row[f"mask_{name}"] = rel
                    counts[name] += 1
            rows.append(row)
    csv_path = out / _CSV_NAME
    columns = ["id", "image", "patient_id", *names, *(f"mask_{name}" for name in names)]
    with atomic_write(csv_path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    summary = dict(params, patients=patient_no, positives=counts)
    atomic_json(out / _PARAMS_NAME, summary, indent=1)
    logger.info("phantoms: %d images of %d patients in %s, positives %s", n, patient_no, out, counts)
    return csv_path


def ensure_phantoms(
    out_dir: str | os.PathLike,
    n: int = 600,
    size: int = 128,
    seed: int = 0,
    prevalence: float | Mapping[str, float] = 0.3,
    label_names: Sequence[str] = PHANTOM_LABELS,
) -> Path:
    """Return the phantom ``datalist.csv`` in ``out_dir``, generating it only when missing or made with other
    parameters (or an older phantom version). Arguments as :func:`make_phantoms`.
    """
    params = _params(n, size, seed, prevalence, label_names)
    out = Path(out_dir).expanduser()
    csv_path = out / _CSV_NAME
    try:
        stored = json.loads((out / _PARAMS_NAME).read_text())
    except (OSError, ValueError):
        stored = None
    if isinstance(stored, dict) and all(stored.get(k) == v for k, v in params.items()) and csv_path.is_file():
        with open(csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
        files = [r["image"] for r in rows] + [r[k] for r in rows for k in r if k.startswith("mask_") and r[k]]
        if len(rows) == n and all((out / rel).is_file() for rel in files):
            logger.debug("phantoms in %s are up to date", out)
            return csv_path
    logger.info("generating phantoms in %s", out)
    return make_phantoms(out, n=n, size=size, seed=seed, prevalence=prevalence, label_names=label_names)

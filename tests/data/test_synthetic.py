"""Synthetic chest phantoms: files, masks vs labels, determinism, caching."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medclass.data import PHANTOM_LABELS, ensure_phantoms, ensure_splits, label_matrix, load_datalist, make_phantoms


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    return make_phantoms(tmp_path_factory.mktemp("ph"), n=80, size=96, seed=0, prevalence=0.4)


def _rows(csv_path: Path) -> list[dict[str, str]]:
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


def test_files_and_csv_columns(phantoms: Path):
    assert phantoms.name == "datalist.csv"
    rows = _rows(phantoms)
    assert len(rows) == 80
    assert list(rows[0]) == ["id", "image", "patient_id", *PHANTOM_LABELS, *(f"mask_{n}" for n in PHANTOM_LABELS)]
    for row in rows:
        img = Image.open(phantoms.parent / row["image"])
        assert img.mode == "L" and img.size == (96, 96)
    params = json.loads((phantoms.parent / "phantoms.json").read_text())
    assert params["n"] == 80 and params["size"] == 96 and params["label_names"] == list(PHANTOM_LABELS)


def test_masks_match_labels(phantoms: Path):
    rows = _rows(phantoms)
    for row in rows:
        for name in PHANTOM_LABELS:
            mask_rel = row[f"mask_{name}"]
            assert (row[name] == "1") == bool(mask_rel), (row["id"], name)
            if mask_rel:
                mask = np.asarray(Image.open(phantoms.parent / mask_rel))
                assert mask.shape == (96, 96) and set(np.unique(mask)) <= {0, 255}
                inside = mask == 255
                assert inside.sum() >= 5, (row["id"], name)
                # the finding lies inside the image, away from its border
                assert not (inside[0].any() or inside[-1].any() or inside[:, 0].any() or inside[:, -1].any())
    masks_dir = phantoms.parent / "masks"
    listed = {r[f"mask_{n}"] for r in rows for n in PHANTOM_LABELS if r[f"mask_{n}"]}
    assert {f"masks/{p.name}" for p in masks_dir.iterdir()} == listed


def test_findings_change_the_image_where_the_mask_is(phantoms: Path):
    """Inside a nodule mask the image is brighter than the lung around it; inside a pneumothorax darker."""
    rows = _rows(phantoms)
    checked = {"nodule": 0, "pneumothorax": 0}
    for row in rows:
        img = np.asarray(Image.open(phantoms.parent / row["image"]), dtype=np.float32)
        for name, sign in (("nodule", 1), ("pneumothorax", -1)):
            if row[name] == "1":
                mask = np.asarray(Image.open(phantoms.parent / row[f"mask_{name}"])) > 0
                ring = np.zeros_like(mask)
                ys, xs = np.nonzero(mask)
                ring[max(ys.min() - 6, 0) : ys.max() + 7, max(xs.min() - 6, 0) : xs.max() + 7] = True
                ring &= ~mask
                assert sign * (img[mask].mean() - np.median(img[ring])) > 0, (row["id"], name)
                checked[name] += 1
    assert min(checked.values()) > 3


@pytest.mark.parametrize("name", ["pneumothorax", "effusion"])
def test_every_pixel_a_finding_changes_is_in_its_mask(name):
    """The mask is the pointing game's ground truth: the whole footprint of the finding (for a pneumothorax the
    air and the bright pleural line bounding it; version 1 left the line out, so maps on the line scored misses)."""
    from medclass.data.synthetic import _draw, _Patient

    for seed in range(12):
        patient = _Patient(np.random.default_rng(seed), [name], {name: 1.0})
        with_f, masks = _draw(patient, {name: True}, 128, np.random.default_rng(100 + seed))
        without, _ = _draw(patient, {}, 128, np.random.default_rng(100 + seed))
        changed = with_f != without
        assert changed.any() and name in masks
        outside = changed & ~masks[name]
        assert not outside.any(), f"seed {seed}: {int(outside.sum())} changed pixels outside the {name} mask"
        assert changed[masks[name]].mean() > 0.9  # and the mask is not much larger than the change


def test_prevalence_and_patients(phantoms: Path):
    dl = load_datalist(phantoms)
    assert dl.label_names == list(PHANTOM_LABELS) and dl.task == "multilabel"
    prevalence = np.nanmean(label_matrix(dl["all"]), axis=0)
    assert np.all(prevalence > 0.2) and np.all(prevalence < 0.65)
    per_patient: dict[str, int] = {}
    for item in dl["all"]:
        per_patient[item["patient_id"]] = per_patient.get(item["patient_id"], 0) + 1
    assert set(per_patient.values()) <= {1, 2, 3} and max(per_patient.values()) > 1
    assert len(per_patient) < len(dl["all"])
    splits = ensure_splits(dl, seed=0)
    assert all(n > 0 for n in splits.sizes().values())


def test_same_seed_same_images_other_seed_differs(tmp_path: Path):
    a = make_phantoms(tmp_path / "a", n=6, size=64, seed=1)
    b = make_phantoms(tmp_path / "b", n=6, size=64, seed=1)
    c = make_phantoms(tmp_path / "c", n=6, size=64, seed=2)
    img = lambda p, k: np.asarray(Image.open(p.parent / "images" / f"phantom_{k:05d}.png"))  # noqa: E731
    for k in range(6):
        np.testing.assert_array_equal(img(a, k), img(b, k))
    assert any(not np.array_equal(img(a, k), img(c, k)) for k in range(6))
    assert _rows(a) == [dict(r) for r in _rows(b)]


def test_label_subset_and_prevalence_extremes(tmp_path: Path):
    csv_path = make_phantoms(tmp_path, n=10, size=64, label_names=["cardiomegaly"], prevalence={"cardiomegaly": 1.0})
    rows = _rows(csv_path)
    assert list(rows[0]) == ["id", "image", "patient_id", "cardiomegaly", "mask_cardiomegaly"]
    assert all(r["cardiomegaly"] == "1" for r in rows)
    none = make_phantoms(tmp_path / "none", n=10, size=64, prevalence=0.0)
    assert not list((none.parent / "masks").iterdir())


def test_bad_parameters(tmp_path: Path):
    with pytest.raises(ValueError, match="fracture"):
        make_phantoms(tmp_path, n=4, label_names=["nodule", "fracture"])
    with pytest.raises(ValueError, match="prevalence"):
        make_phantoms(tmp_path, n=4, prevalence=1.5)
    with pytest.raises(ValueError, match="n=0"):
        make_phantoms(tmp_path, n=0)
    with pytest.raises(ValueError, match="size"):
        make_phantoms(tmp_path, n=4, size=8)


def test_ensure_phantoms_regenerates_only_when_needed(tmp_path: Path):
    first = ensure_phantoms(tmp_path, n=5, size=64, seed=0)
    stamp = (tmp_path / "phantoms.json").stat().st_mtime_ns
    image = tmp_path / "images" / "phantom_00000.png"
    before = image.read_bytes()
    assert ensure_phantoms(tmp_path, n=5, size=64, seed=0) == first
    assert (tmp_path / "phantoms.json").stat().st_mtime_ns == stamp  # nothing rewritten
    ensure_phantoms(tmp_path, n=5, size=64, seed=9)  # other parameters: regenerated
    assert image.read_bytes() != before
    assert json.loads((tmp_path / "phantoms.json").read_text())["seed"] == 9
    ensure_phantoms(tmp_path, n=3, size=64, seed=9)  # fewer images: stale files removed
    assert len(list((tmp_path / "images").iterdir())) == 3
    image.unlink()  # a missing file: regenerated
    ensure_phantoms(tmp_path, n=3, size=64, seed=9)
    assert image.exists()


def test_default_set_is_fast(tmp_path: Path):
    start = time.perf_counter()
    csv_path = make_phantoms(tmp_path, n=600, size=128, seed=0)
    elapsed = time.perf_counter() - start
    assert len(_rows(csv_path)) == 600
    assert elapsed < 20, f"600 phantoms took {elapsed:.1f} s"  # ~2 s on an idle 2-core machine


# ---------------------------------------------------------------------------------------------- 3D volume phantoms
@pytest.mark.parametrize("size", [32, 48])
def test_volume_findings_are_conspicuous_and_scale_with_size(tmp_path: Path, size: int):
    """Each planted 3D finding has its documented density and a radius that is the same fraction of the volume at
    every size (version 1 findings were too small and faint for the bundle's model to learn)."""
    import nibabel as nib

    from medclass.data.synthetic3d import FINDINGS, make_volume_phantoms

    csv_path = make_volume_phantoms(tmp_path, n=16, size=size, seed=4, prevalence=1.0)
    rows = _rows(csv_path)
    assert all(r[name] == "1" for r in rows for name in FINDINGS)
    for r in rows:
        vol = np.asarray(nib.load(tmp_path / r["image"]).dataobj, dtype=np.float32)
        taken = np.zeros(vol.shape, dtype=bool)
        for name, (hu, (rmin, rmax)) in FINDINGS.items():
            mask = np.asarray(nib.load(tmp_path / r[f"mask_{name}"]).dataobj).astype(bool)
            assert not (mask & taken).any(), f"{name} overlaps another finding in {r['id']}"
            taken |= mask
            # sphere volume -> radius as a fraction of the side: the documented range (shrunk to no less than 0.6x
            # where three findings crowd a small organ; voxelisation slack)
            radius = (3 * mask.sum() / (4 * np.pi)) ** (1 / 3) / size
            assert rmin / 48 * 0.55 <= radius <= rmax / 48 * 1.15, (name, radius)
            inside = float(np.median(vol[mask]))
            assert abs(inside - hu) < 40, (name, inside)
            # the organ around it (a shell just outside the sphere, inside the body) differs clearly
            from scipy.ndimage import binary_dilation

            shell = binary_dilation(mask, iterations=2) & ~mask
            assert abs(inside - float(np.median(vol[shell]))) > 30 if name != "calcification" else inside > 500

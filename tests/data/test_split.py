"""Patient-disjoint stratified splits, reports and ensure_splits."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from medclass.data import (
    Datalist,
    ensure_splits,
    label_matrix,
    log_split_report,
    patient_overlap,
    split_patients,
    split_report,
)


def _multilabel_items(n_patients=400, seed=1, prevalences=(0.4, 0.15, 0.05, 0.02)):
    """Patients with 1-4 images, correlated labels per patient, some unknowns."""
    rng = np.random.default_rng(seed)
    items = []
    for p in range(n_patients):
        base = rng.random(len(prevalences)) < np.asarray(prevalences)
        for _ in range(int(rng.integers(1, 5))):
            label = base.astype(np.float32)
            flip = rng.random(len(prevalences)) < 0.1
            label[flip] = 1 - label[flip]
            label[rng.random(len(prevalences)) < 0.05] = np.nan
            k = len(items)
            items.append({"image": f"/x/{k}.png", "id": f"img{k}", "patient_id": f"P{p}", "label": label})
    return items


def _patients(items):
    return {i["patient_id"] for i in items}


def test_patient_disjoint_complete_and_sized():
    items = _multilabel_items()
    splits = split_patients(items, (0.7, 0.15, 0.15), seed=0)
    assert list(splits) == ["training", "validation", "test"]
    assert sum(len(v) for v in splits.values()) == len(items)
    assert {i["id"] for v in splits.values() for i in v} == {i["id"] for i in items}
    tr, va, te = (_patients(splits[s]) for s in splits)
    assert not (tr & va) and not (tr & te) and not (va & te)
    assert patient_overlap(splits) == {}
    for name, frac in (("training", 0.7), ("validation", 0.15), ("test", 0.15)):
        assert abs(len(splits[name]) / len(items) - frac) < 0.03
    # each split keeps the input order
    order = {i["id"]: k for k, i in enumerate(items)}
    assert [order[i["id"]] for i in splits["test"]] == sorted(order[i["id"]] for i in splits["test"])


def test_stratification_keeps_prevalence():
    items = _multilabel_items(n_patients=600)
    splits = split_patients(items, seed=3)
    overall = np.nanmean(label_matrix(items), axis=0)
    for name, part in splits.items():
        prev = np.nanmean(label_matrix(part), axis=0)
        # absolute tolerance per label, tighter than a random patient split gives for the rare labels
        np.testing.assert_allclose(prev, overall, atol=0.02, err_msg=name)
    # the rarest label has positives in every split
    for part in splits.values():
        assert np.nansum(label_matrix(part)[:, 3]) > 0


def test_stratification_beats_random_on_rare_label():
    items = _multilabel_items(n_patients=300, prevalences=(0.3, 0.03))
    total = np.nansum(label_matrix(items)[:, 1])
    patients = sorted(_patients(items))

    def error(splits):  # how far validation and test are from 15% of the rare positives
        return sum(abs(np.nansum(label_matrix(splits[s])[:, 1]) - 0.15 * total) for s in ("validation", "test"))

    strat, rand = [], []
    for seed in range(8):
        strat.append(error(split_patients(items, seed=seed)))
        perm = np.random.default_rng(seed).permutation(patients)
        cut = {p: ("training" if k < 0.7 * len(perm) else "validation" if k < 0.85 * len(perm) else "test")
               for k, p in enumerate(perm)}
        rand.append(error({s: [i for i in items if cut[i["patient_id"]] == s] for s in ("validation", "test")}))
    assert np.mean(strat) < 0.5 * np.mean(rand)


def test_deterministic_for_seed_and_seed_matters():
    items = _multilabel_items()
    ids = lambda s: {k: [i["id"] for i in v] for k, v in s.items()}  # noqa: E731
    assert ids(split_patients(items, seed=5)) == ids(split_patients(items, seed=5))
    assert ids(split_patients(items, seed=5)) != ids(split_patients(items, seed=6))


def test_items_without_patient_are_their_own_patient():
    items = [{"id": f"i{k}", "label": np.array([k % 2], np.float32)} for k in range(20)]
    splits = split_patients(items, (0.5, 0.25, 0.25), seed=0, names=("a", "b", "c"))
    assert sorted(len(v) for v in splits.values()) == [5, 5, 10]


def test_too_few_patients_raises_naming_split():
    items = [
        {"id": "a", "patient_id": "p1", "label": np.array([1.0], np.float32)},
        {"id": "b", "patient_id": "p1", "label": np.array([0.0], np.float32)},
        {"id": "c", "patient_id": "p2", "label": np.array([0.0], np.float32)},
    ]
    with pytest.raises(ValueError, match=r"2 patient\(s\).*'test' would be empty"):
        split_patients(items)
    # three patients are enough: every split gets one
    items.append({"id": "d", "patient_id": "p3", "label": np.array([1.0], np.float32)})
    assert all(len(v) >= 1 for v in split_patients(items).values())


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (0.7, 0.3, 0.0), (0.6, 0.3, 0.3), (1.2, -0.1, -0.1)])
def test_bad_fractions(fractions):
    with pytest.raises(ValueError, match="fractions"):
        split_patients(_multilabel_items(20), fractions)


def test_split_report_and_table(caplog):
    items = _multilabel_items(100)
    splits = split_patients(items, seed=0)
    report = split_report(splits, ["a", "b", "c", "d"])
    assert set(report) == {"training", "validation", "test"}
    for name, part in splits.items():
        assert report[name]["images"] == len(part)
        assert report[name]["patients"] == len(_patients(part))
        lab = label_matrix(part)
        entry = report[name]["labels"]["a"]
        assert entry["positives"] == int(np.nansum(lab[:, 0]))
        assert entry["prevalence"] == pytest.approx(np.nanmean(lab[:, 0]))
    with caplog.at_level(logging.INFO, logger="medclass.data.split"):
        text = log_split_report(splits, ["a", "b", "c", "d"])
    assert "patients" in text and "training" in text
    assert f"{report['test']['labels']['d']['positives']} (" in text.splitlines()[-1]
    assert text in caplog.text


def _datalist(splits, task="binary"):
    return Datalist(splits, ["x"], task)


def _binary_items(n, prefix, patients=None):
    return [
        {
            "image": f"/{prefix}{k}.png",
            "id": f"{prefix}{k}",
            "patient_id": f"{prefix}P{k // 2 if patients is None else patients[k]}",
            "label": np.array([k % 3 == 0], np.float32),
        }
        for k in range(n)
    ]


def test_ensure_splits_resplits_all():
    dl = _datalist({"all": _binary_items(60, "a")})
    out = ensure_splits(dl, seed=0)
    assert list(out.splits) == ["training", "validation", "test"]
    assert sum(out.sizes().values()) == 60 and patient_overlap(out.splits) == {}
    assert dl.sizes() == {"all": 60}  # input untouched


def test_ensure_splits_keeps_given_and_carves_validation(caplog):
    full = _datalist(
        {"training": _binary_items(40, "t"), "validation": _binary_items(6, "v"), "test": _binary_items(6, "s")}
    )
    kept = ensure_splits(full)
    assert [[i["id"] for i in kept[s]] for s in kept.splits] == [[i["id"] for i in full[s]] for s in full.splits]

    partial = _datalist({"training": _binary_items(40, "t"), "test": _binary_items(6, "s")})
    out = ensure_splits(partial, (0.7, 0.15, 0.15), seed=0)
    assert out.sizes()["test"] == 6
    assert out.sizes()["training"] + out.sizes()["validation"] == 40
    assert 4 <= out.sizes()["validation"] <= 10  # 0.15 / 0.85 of 40 ~ 7
    assert patient_overlap(out.splits) == {}

    only_train = ensure_splits(_datalist({"training": _binary_items(60, "t")}), seed=0)
    assert all(n > 0 for n in only_train.sizes().values())


def test_ensure_splits_errors_and_overlap_warning(caplog):
    with pytest.raises(ValueError, match="'validation' is empty"):
        ensure_splits(_datalist({"training": _binary_items(10, "t"), "validation": [], "test": _binary_items(3, "s")}))
    with pytest.raises(ValueError, match="no 'training'"):
        ensure_splits(_datalist({"test": _binary_items(3, "s")}))
    shared = _binary_items(10, "t", patients=list(range(10)))
    leak = [dict(i, id=f"v{k}") for k, i in enumerate(shared[:3])]
    dl = _datalist({"training": shared, "validation": leak, "test": _binary_items(4, "s")})
    with caplog.at_level(logging.WARNING, logger="medclass.data.split"):
        kept = ensure_splits(dl)
    assert "share patients" in caplog.text and patient_overlap(kept.splits)
    fixed = ensure_splits(dl, resplit=True, seed=0)
    assert patient_overlap(fixed.splits) == {} and sum(fixed.sizes().values()) == 17

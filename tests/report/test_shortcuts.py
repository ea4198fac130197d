"""Shortcut check: saliency maps sitting on the image border or on burned-in text are measured and flagged, maps
on the anatomy are not."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from medclass.report import build_report
from medclass.report.shortcuts import border_mask, shortcut_shares, summarize_shortcuts, text_mask, write_shortcuts


def chest_with_marker(seed: int = 0, size: int = 96) -> np.ndarray:
    """A smooth chest-like image with a burned-in white "R" marker in the top-right corner."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    img = 0.35 + 0.3 * np.exp(-((xx - 0.5) ** 2 + (yy - 0.55) ** 2) / 0.08) + 0.02 * rng.normal(size=(size, size))
    img[20:60, 35:40] += 0.25  # a bright spine-like band in the middle: bright but not text
    r = np.zeros((9, 7), bool)  # the letter R
    r[:, 0] = r[0, :5] = r[4, :5] = True
    r[1:4, 5] = True
    for k in range(4):
        r[5 + k, 2 + k] = True
    img[6:15, 80:87][r] = 1.6
    return img


def test_text_mask_finds_the_corner_marker_not_the_bright_anatomy():
    img = chest_with_marker()
    t = text_mask(img)
    assert t[6:15, 80:87].any() and t[6:15, 80:87].sum() >= 15
    assert not t[20:60, 30:45].any()  # the bright band is away from the corners and large
    assert t.sum() < 0.03 * t.size
    assert border_mask((100, 100)).mean() == pytest.approx(1 - 0.84 ** 2)


def test_shares_flag_maps_on_marker_or_border_and_pass_maps_on_the_anatomy():
    img = chest_with_marker()
    on_text = np.zeros_like(img)
    on_text[4:17, 78:89] = 1.0
    on_border = np.zeros_like(img)
    on_border[:, :6] = 1.0
    on_lung = np.zeros_like(img)
    on_lung[35:65, 25:70] = 1.0
    s_text, s_border, s_lung = (shortcut_shares(img, h) for h in (on_text, on_border, on_lung))
    assert s_text["text"] > 0.5 and s_text["combined"] > 0.8
    assert s_border["border"] == pytest.approx(1.0) and s_border["text"] == 0.0
    assert s_lung["combined"] == 0.0
    per_map = [{"label": "nodule", **s_text}, {"label": "nodule", **s_border}, {"label": "nodule", **s_lung},
               {"label": "effusion", **s_lung}, {"label": "effusion", **s_lung}]
    summary = summarize_shortcuts(per_map)
    assert summary["nodule"]["flagged"] and summary["nodule"]["mostly_there"] == pytest.approx(2 / 3)
    assert not summary["effusion"]["flagged"]
    one = summarize_shortcuts([{"label": "nodule", **s_text}])  # one map on the marker: too few to judge
    assert not one["nodule"]["flagged"] and "too few to judge" in one["nodule"]["note"]
    with pytest.raises(ValueError, match="differ in shape"):
        shortcut_shares(img, on_lung[:50])


def test_evaluation_report_shows_the_shortcut_check(tmp_path):
    """write_shortcuts reads saliency/index.csv and the maps, preprocesses the items' images, and the report
    shows a table and a warning for the flagged finding."""
    folder = tmp_path / "eval"
    sal = folder / "saliency"
    sal.mkdir(parents=True)
    img = chest_with_marker()
    items = [{"id": f"i{k}", "image": img, "label": [float(k % 2), 1.0]} for k in range(4)]
    with open(sal / "index.csv", "w") as f:
        f.write("id,label,probability,method,map,png\n")
        for it in items:
            heat = np.zeros_like(img)
            heat[4:17, 78:89] = 1.0  # every 'nodule' map on the marker
            np.save(sal / f"{it['id']}_nodule.npy", heat)
            f.write(f"{it['id']},nodule,0.9,gradcam,{it['id']}_nodule.npy,\n")
            heat = np.zeros_like(img)
            heat[35:65, 25:70] = 1.0
            np.save(sal / f"{it['id']}_effusion.npy", heat)
            f.write(f"{it['id']},effusion,0.8,gradcam,{it['id']}_effusion.npy,\n")
    out = write_shortcuts(folder, items, lambda item: {"image": item["image"][None]})
    assert out["per_label"]["nodule"]["flagged"] and not out["per_label"]["effusion"]["flagged"]
    assert json.loads((sal / "shortcuts.json").read_text())["per_label"]["nodule"]["maps"] == 4
    rng = np.random.default_rng(0)
    with open(folder / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "prob_nodule", "prob_effusion", "pred_nodule", "pred_effusion", "label_nodule",
                    "label_effusion"])
        for k in range(40):
            w.writerow([f"i{k}", f"{rng.random():.4f}", f"{rng.random():.4f}", 0, 1, k % 2, (k // 2) % 2])
    build_report(folder, n_bootstrap=10)
    page = (folder / "report.html").read_text()
    assert "Shortcut check" in page and "saliency mostly on the image border or burned-in text</b> for nodule" in page

"""Shortcut check of 2D saliency maps: how much of each map sits on the image border and on burned-in text.

A classifier that looks at the border (collimation edges, padding) or at burned-in text (side markers, hospital
labels, "PORTABLE") has learned where an image came from, not what it shows. For each map under ``saliency/``
(``<id>_<label>.npy``, listed in ``saliency/index.csv``) and its preprocessed image, the share of the map's total
saliency that falls

* on the **border**: pixels within ``border`` (default 8%) of the image height/width from an edge; and
* on **burned-in text**, found by a deliberately simple heuristic: the image is scaled to [0, 1] by its 1st and
  99.5th percentiles; a pixel is text-like when it is bright (>= ``bright``, default 0.8) and stands out from
  its surroundings (image minus its median over a window of 1/8 of the image side >= ``contrast``, default
  0.3); connected groups of such pixels are kept when they lie in a corner box (the outer ``corner`` share,
  default 25%, of both the height and the width), cover between 4 pixels and ``max_blob`` (default 2%) of
  the image, and the kept groups are grown by 2 pixels. It finds the white letters and markers typical of
  radiographs; it misses dark or low-contrast text and text away from the corners, and bright wires or
  electrodes near a corner can be taken for text.

A finding (label) is flagged when the median over its maps (at least ``min_maps``, default 3) of the share on
border or text exceeds ``flag_at`` (default 0.5, i.e. most of the saliency); a map spread evenly over the image
puts about 29% on an 8% border.
"""

from __future__ import annotations

import csv
import html
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medclass.files import atomic_json
from medclass.metrics import to_json
from medclass.report.tables import fmt, table

logger = logging.getLogger(__name__)

__all__ = ["border_mask", "shortcut_shares", "shortcuts_html", "summarize_shortcuts", "text_mask", "write_shortcuts"]

#: written under ``saliency/`` by the evaluation writer when saliency maps exist (border / text shares)
SHORTCUTS_FILE = "shortcuts.json"

DEFAULTS = {"border": 0.08, "bright": 0.8, "contrast": 0.3, "corner": 0.25, "max_blob": 0.02, "flag_at": 0.5,
            "min_maps": 3}
#: the parameters of the masks (the rest are about flagging)
MASK_KEYS = ("border", "bright", "contrast", "corner", "max_blob")


def border_mask(shape: Sequence[int], border: float = DEFAULTS["border"]) -> np.ndarray:
    """``(H, W)`` bool: pixels within ``border`` of the height/width from an edge (at least one pixel)."""
    h, w = int(shape[0]), int(shape[1])
    bh, bw = max(1, int(round(border * h))), max(1, int(round(border * w)))
    m = np.zeros((h, w), dtype=bool)
    m[:bh], m[-bh:], m[:, :bw], m[:, -bw:] = True, True, True, True
    return m


def text_mask(image, bright: float = DEFAULTS["bright"], contrast: float = DEFAULTS["contrast"],
              corner: float = DEFAULTS["corner"], max_blob: float = DEFAULTS["max_blob"]) -> np.ndarray:
    """``(H, W)`` bool: bright, high-contrast, small blobs near the corners (the heuristic of the module text).

    Args:
        image: ``(H, W)`` image (any intensity range).
        bright: lowest scaled intensity of a text pixel.
        contrast: lowest difference to the local median.
        corner: corner boxes span this share of the height and of the width.
        max_blob: largest blob, as a share of the image.
    """
    from scipy import ndimage

    img = np.asarray(image, dtype=np.float64)
    h, w = img.shape
    lo, hi = np.percentile(img, [1, 99.5])
    x = np.clip((img - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(img)
    size = max(3, int(round(min(h, w) / 8)) | 1)
    local = ndimage.median_filter(x, size=size, mode="nearest")
    cand = (x >= bright) & (x - local >= contrast)
    ch, cw = max(1, int(round(corner * h))), max(1, int(round(corner * w)))
    corners = np.zeros((h, w), dtype=bool)
    corners[:ch, :cw] = corners[:ch, -cw:] = corners[-ch:, :cw] = corners[-ch:, -cw:] = True
    labels, n = ndimage.label(cand, structure=np.ones((3, 3)))
    keep = np.zeros((h, w), dtype=bool)
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        blob = labels[sl] == k
        area = int(blob.sum())
        if area < 4 or area > max_blob * h * w:
            continue
        inside = corners[sl][blob].mean()
        if inside >= 0.5:
            keep[sl] |= blob
    return ndimage.binary_dilation(keep, iterations=2) if keep.any() else keep


def shortcut_shares(image, heat, **params) -> dict[str, float]:
    """Shares of one saliency map's total on the border, on text, and on either.

    Args:
        image: ``(H, W)`` (or ``(C, H, W)``, averaged over channels) preprocessed image.
        heat: ``(H, W)`` non-negative saliency map of the same shape.
        params: overrides of :data:`DEFAULTS` (``border``, ``bright``, ``contrast``, ``corner``, ``max_blob``).

    Returns:
        ``{"border", "text", "combined", "text_pixels"}``; shares are ``nan`` for an all-zero map.
    """
    p = {**{k: DEFAULTS[k] for k in MASK_KEYS}, **params}
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 3:
        img = img.mean(axis=0)
    hm = np.clip(np.asarray(heat, dtype=np.float64), 0, None)
    if img.shape != hm.shape:
        raise ValueError(f"saliency map {hm.shape} and image {img.shape} differ in shape")
    b = border_mask(hm.shape, p["border"])
    t = text_mask(img, p["bright"], p["contrast"], p["corner"], p["max_blob"])
    total = hm.sum()
    if not total > 0:
        return {"border": math.nan, "text": math.nan, "combined": math.nan, "text_pixels": int(t.sum())}
    return {"border": float(hm[b].sum() / total), "text": float(hm[t].sum() / total),
            "combined": float(hm[b | t].sum() / total), "text_pixels": int(t.sum())}


def summarize_shortcuts(per_map: Sequence[Mapping[str, Any]], flag_at: float = DEFAULTS["flag_at"],
                        min_maps: int = DEFAULTS["min_maps"]) -> dict:
    """Per label: maps, median border/text/combined shares, the share of maps mostly there, and ``flagged``
    (median combined share above ``flag_at``, over at least ``min_maps`` maps; fewer maps are too few to judge
    and say so under ``note``)."""
    out: dict[str, dict] = {}
    for label in dict.fromkeys(r["label"] for r in per_map):
        rows = [r for r in per_map if r["label"] == label and math.isfinite(r["combined"])]
        if not rows:
            continue
        comb = np.array([r["combined"] for r in rows])
        enough = len(rows) >= min_maps
        out[label] = {"maps": len(rows), "border": float(np.median([r["border"] for r in rows])),
                      "text": float(np.median([r["text"] for r in rows])), "combined": float(np.median(comb)),
                      "mostly_there": float((comb > flag_at).mean()),
                      "flagged": bool(enough and np.median(comb) > flag_at),
                      "note": None if enough else f"{len(rows)} map(s): too few to judge (fewer than {min_maps})"}
    return out


def write_shortcuts(folder: str | os.PathLike, items: Sequence[Mapping], preprocessing, **params) -> dict | None:
    """Check the 2D maps listed in ``folder/saliency/index.csv`` and write ``folder/saliency/shortcuts.json``.

    Images are the items (matched by id) through ``preprocessing``, so they are in the maps' space. Returns
    what was written, or ``None`` when there are no 2D maps.
    """
    root = Path(folder) / "saliency"
    index = root / "index.csv"
    if not index.exists():
        return None
    with open(index, newline="") as f:
        entries = [r for r in csv.DictReader(f) if (r.get("map") or "").endswith(".npy")]
    if not entries:
        return None
    by_id = {str(it.get("id")): it for it in items}
    p = {**DEFAULTS, **params}
    per_map, images = [], {}
    for r in entries:
        item = by_id.get(r["id"])
        if item is None or not (root / r["map"]).exists():
            continue
        if r["id"] not in images:
            data = preprocessing(dict(item))
            img = data["image"] if isinstance(data, Mapping) else data
            images[r["id"]] = img.detach().cpu().numpy() if hasattr(img, "detach") else np.asarray(img)
        heat = np.load(root / r["map"])
        try:
            shares = shortcut_shares(images[r["id"]], heat, **{k: p[k] for k in MASK_KEYS})
        except ValueError as exc:
            logger.warning("shortcut check: %s: %s", r["map"], exc)
            continue
        per_map.append({"id": r["id"], "label": r["label"], **shares})
    out = {"heuristic": __doc__.split("\n\n")[1].strip(), "params": p,
           "uniform_border_share": float(border_mask((100, 100), p["border"]).mean()),
           "per_label": summarize_shortcuts(per_map, p["flag_at"], int(p["min_maps"])), "per_map": per_map}
    atomic_json(root / SHORTCUTS_FILE, to_json(out), allow_nan=False)
    flagged = [k for k, v in out["per_label"].items() if v["flagged"]]
    if flagged:
        logger.warning("saliency mostly on the border or burned-in text for %s", ", ".join(flagged))
    return out


def shortcuts_html(short: Mapping) -> str:
    """The report section: per finding, where its saliency maps sit."""
    p = short.get("params") or DEFAULTS
    rows = []
    for label, s in (short.get("per_label") or {}).items():
        flag = '<span class="undef">mostly border/text</span>' if s.get("flagged") else \
            html.escape(s["note"]) if s.get("note") else "no"
        rows.append([html.escape(label), str(s["maps"]), fmt(s["border"], 2), fmt(s["text"], 2), fmt(s["combined"], 2),
                     fmt(s["mostly_there"], 2), flag])
    note = (f'<p class="note">Share of each saliency map on the image border (outer {p["border"]:.0%} of each side; '
            f"an even map puts {short.get('uniform_border_share', 0.29):.0%} there) and on burned-in text (bright, "
            "high-contrast small blobs near the corners: a simple heuristic that misses dark text and text away "
            f"from the corners). A finding is flagged when its median share on either exceeds {p['flag_at']:.0%} "
            f"over at least {p.get('min_maps', 3)} maps.</p>")
    return "<h2>Shortcut check (saliency on border and burned-in text)</h2>" + note + table(
        ["finding", "maps", "median share on border", "median share on text", "median share on either",
         "maps mostly there", "flagged"], rows)

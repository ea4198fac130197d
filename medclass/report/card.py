"""The model card: one Markdown and one HTML page describing a model file and its evaluation (issue 24).

Everything on the card is read from files: the model file (architecture, label names, thresholds and how they were
chosen, temperature, starting weights and preprocessing, as the classifier's ``_extra_state`` metadata records them),
the evaluation folder's ``metrics.json`` (every figure, copied as it is there), ``thresholds.json``, ``data.json``
(counts per split, patients and label prevalences, written by the evaluate workflow: aggregates only, never an image
or patient identifier) and, where there is no ``data.json``, the ``split.csv`` next to the model (counts only).

Each section names the reporting items it answers: TRIPOD+AI (Collins et al., BMJ 2024) and CLAIM (Mongan et al.,
Radiology: AI 2020; item numbers of that checklist). ``medclass model-card MODEL [EVAL_DIR]`` and the evaluate workflow
write ``model_card.md``, ``model_card.html`` and ``model_card.json`` (the values the card shows).

The "Model and data" section (:func:`model_data_sections`) is also part of the evaluation report
(:mod:`medclass.report.html`).
"""

from __future__ import annotations

import csv
import datetime
import html
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from medclass.files import atomic_json, atomic_text, read_json
from medclass.data import split_report
from medclass.networks import Classifier, read_state_dict
from medclass.report.tables import CSS, table

logger = logging.getLogger(__name__)

__all__ = ["CARD_FILES", "DATA_FILE", "MODEL_FILE", "Section", "build_card", "data_summary", "model_data_sections",
           "model_summary", "read_model", "render_html", "render_markdown", "write_model_card"]

#: files the evaluation folder holds for the card: the model's description and the data summary
MODEL_FILE = "model.json"
DATA_FILE = "data.json"
#: the card's files (Markdown, HTML, the values as JSON)
CARD_FILES = ("model_card.md", "model_card.html", "model_card.json")
#: the key of the threshold provenance in the model's metadata (written by the evaluate workflow)
PROVENANCE = "operating_points"

Section = dict  # {"title", "items" (reporting items answered), "text": [str], "tables": [(header, rows)]}


# ------------------------------------------------------------------------------------------------ reading
def read_model(path: str | os.PathLike) -> dict[str, Any]:
    """The description of a medclass model file: its metadata plus ``thresholds`` and ``temperature``.

    Read safely (``weights_only``); fields that later medclass versions add (``preset``, ``task``, a training-data
    fingerprint ...) are kept as they are and read with ``.get`` by the card.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a medclass classifier (no metadata).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no model file")
    state = read_state_dict(path)
    if "_extra_state" not in state:
        raise ValueError(f"{path}: not a medclass model file (no classifier metadata '_extra_state')")
    meta = dict(Classifier.decode_extra_state(state["_extra_state"]))
    for key in ("thresholds", "temperature"):
        if isinstance(state.get(key), torch.Tensor):
            meta[key] = [float(v) for v in state[key].flatten()]
    meta["file"] = path.name
    return meta


def _fingerprint(meta: Mapping[str, Any]) -> Any:
    """The training-data fingerprint a model file records, under whichever key its medclass version used."""
    for key in ("training_data_fingerprint", "data_fingerprint", "fingerprint", "training_data"):
        if meta.get(key):
            return meta[key]
    return next((v for k, v in sorted(meta.items()) if "fingerprint" in k and v), None)


def model_summary(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The model facts the card shows (JSON-ready), from :func:`read_model`'s dictionary."""
    names = list(meta.get("label_names") or [])
    thresholds = list(meta.get("thresholds") or [])
    pretrained = meta.get("pretrained") or None
    temperature = (meta.get("temperature") or [1.0])[0]
    return {
        "file": meta.get("file"), "arch": meta.get("arch"), "spatial_dims": meta.get("spatial_dims"),
        "in_channels": meta.get("in_channels"), "num_classes": meta.get("num_classes"),
        "image_size": meta.get("image_size"), "width": meta.get("width"), "stem": meta.get("stem"),
        "conv": meta.get("conv"), "patch_size": meta.get("patch_size"), "label_names": names,
        "task": meta.get("task"), "preset": meta.get("preset"), "preset_options": meta.get("preset_options"),
        "pretrained": pretrained, "thresholds": dict(zip(names, thresholds)), "temperature": temperature,
        "operating_points": meta.get(PROVENANCE),
        "threshold_method": meta.get("threshold_method") or meta.get("operating_point"),
        "fingerprint": _fingerprint(meta),
        "medclass_version": meta.get("medclass_version"),
        "ensemble": meta.get("ensemble"),
    }


def data_summary(splits: Mapping[str, Sequence[Mapping[str, Any]]], label_names: Sequence[str]) -> dict[str, Any]:
    """Counts per split (images, patients, images with a patient id) and label prevalences: aggregates only (what
    the evaluate workflow writes to ``data.json``)."""
    report = split_report(splits, label_names)
    for split, items in splits.items():
        report[split]["with_patient_id"] = sum(1 for it in items if str(it.get("patient_id") or "").strip())
        for lab in report[split]["labels"].values():
            if not math.isfinite(lab["prevalence"]):
                lab["prevalence"] = None  # nothing known: JSON null, shown as n/a
    return {"label_names": list(label_names), "splits": report}


def _split_csv_summary(path: Path) -> dict[str, Any] | None:
    """Counts per split from a ``split.csv`` (no labels there, so no prevalences)."""
    if not path.is_file():
        return None
    splits: dict[str, dict[str, Any]] = {}
    patients: dict[str, set] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            name = row.get("split") or "?"
            s = splits.setdefault(name, {"images": 0, "patients": 0, "with_patient_id": 0, "labels": {}})
            s["images"] += 1
            pid = (row.get("patient_id") or "").strip()
            if pid:
                s["with_patient_id"] += 1
            patients.setdefault(name, set()).add(pid or f"image:{row.get('id')}")
    for name, s in splits.items():
        s["patients"] = len(patients[name])
    return {"label_names": [], "splits": splits, "source": path.name}



# ------------------------------------------------------------------------------------------------ formatting
def num(v: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals; ``n/a`` for a missing or non-finite one."""
    if v is None or isinstance(v, bool) or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, int):
        return str(v)
    return f"{float(v):.{digits}f}"


def with_ci(v: Any, ci: Any, reason: str | None = None) -> str:
    """``value [lower, upper]``, or ``not estimable`` with the reason (never a made-up interval)."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "not estimable" + (f": {reason}" if reason else "")
    if not ci or ci[0] is None or ci[1] is None:
        return f"{num(v)} [interval not estimable{': ' + reason if reason else ''}]"
    return f"{num(v)} [{num(ci[0])}, {num(ci[1])}]"


def _plain(v: Any) -> str:
    if v is None or v == {} or v == []:
        return "not recorded"
    return json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else str(v)


# ------------------------------------------------------------------------------------------------ sections
def model_data_sections(model: Mapping[str, Any] | None, data: Mapping[str, Any] | None,
                        metrics: Mapping[str, Any] | None = None) -> list[Section]:
    """The "model" and "training data" sections (shared by the card and the evaluation report)."""
    out: list[Section] = []
    if model:
        pre = model.get("pretrained") or {}
        labels = list(model.get("label_names") or [])
        start = ("random initialisation (trained from scratch)" if not pre else
                 f"pretrained weights: {pre.get('source') or pre.get('name') or 'recorded'}"
                 + (f", file {pre['file']}" if pre.get("file") else "")
                 + (f", SHA-256 {str(pre['sha256'])[:16]}..." if pre.get("sha256") else "")
                 + (f", layout {pre['layout']}" if pre.get("layout") else ""))
        rows = [["architecture", _plain(model.get("arch"))], ["spatial dims", _plain(model.get("spatial_dims"))],
                ["input channels", _plain(model.get("in_channels"))], ["image size", _plain(model.get("image_size"))],
                ["width", _plain(model.get("width"))], ["stem", _plain(model.get("stem"))],
                ["convolutions", _plain(model.get("conv"))], ["ViT patch size", _plain(model.get("patch_size"))],
                ["outputs", f"{len(labels)} logits: {', '.join(labels)}"],
                ["task", _plain(model.get("task") or (metrics or {}).get("task"))],
                ["starting weights", start], ["model file", _plain(model.get("file"))],
                ["training-data fingerprint", _plain(model.get("fingerprint"))]]
        ens = model.get("ensemble")
        if isinstance(ens, Mapping):  # one model file, k members whose mean probability is the output
            folds = f", folds {ens.get('folds')}" if ens.get("folds") else ""
            rows.insert(0, ["ensemble", f"{ens.get('members')} members by {ens.get('by')} (seeds {ens.get('seeds')}"
                                        f"{folds}); the output is the mean of their probabilities"])
        claim = "CLAIM 22, 23, 24, 27" if isinstance(ens, Mapping) else "CLAIM 22, 23, 24"  # 27: ensembling
        out.append({"title": "Model: architecture and starting weights", "items": f"TRIPOD+AI 12c, 22; {claim}",
                    "text": ["A medclass classifier over a MONAI backbone; it returns one logit per label, turned "
                             "into probabilities by a sigmoid (softmax for multi-class) of logits / temperature "
                             f"(temperature {num(model.get('temperature'))}). Software: medclass, MONAI, PyTorch."],
                    "tables": [(["property", "value"], rows)]})
        pp = pre.get("preprocessing") if isinstance(pre, Mapping) else None
        rows = [["preset", _plain(model.get("preset"))], ["preset options", _plain(model.get("preset_options"))],
                ["image size", _plain(model.get("image_size"))],
                ["preprocessing the starting weights expect", _plain(pp)]]
        out.append({"title": "Preprocessing", "items": "TRIPOD+AI 7, 12b; CLAIM 9",
                    "text": ["DICOM: modality LUT (rescale), VOI LUT / window, MONOCHROME1 inverted; then the preset's "
                             "intensity steps and a resize to the image size (see "
                             "medclass.transforms.build_transforms). Values the model file does not record say "
                             "'not recorded': take them from the bundle configuration the model was trained with."],
                    "tables": [(["step", "value"], rows)]})
    if data and data.get("splits"):
        names = list(data.get("label_names") or [])
        header = ["split", "images", "patients", "images with a patient id"] + [f"{n} prevalence (pos/known)"
                                                                               for n in names]
        rows = []
        for split, s in data["splits"].items():
            labels = s.get("labels") or {}
            rows.append([split, str(s.get("images")), str(s.get("patients")), str(s.get("with_patient_id", "n/a"))]
                        + [f"{num(labels[n].get('prevalence'))} ({labels[n].get('positives')}/{labels[n].get('known')})"
                           if n in labels else "n/a" for n in names])
        text = ["Splits are patient-disjoint and stratified by label prevalence (images without a patient id count "
                "as their own patient). Only counts are shown; no image or patient identifier."]
        if data.get("source"):
            text.append(f"From {data['source']} (no labels there, so no prevalences).")
        out.append({"title": "Training data", "items": "TRIPOD+AI 5a, 10, 12a, 13, 20a, 21; CLAIM 7, 20, 21, 34",
                    "text": text, "tables": [(header, rows)]})
    elif model is not None:
        out.append({"title": "Training data", "items": "TRIPOD+AI 5a, 10, 12a, 20a; CLAIM 7, 20, 21, 34",
                    "text": ["Not recorded: no data.json in the evaluation folder and no split.csv beside the model."],
                    "tables": []})
    return out


def _performance_sections(metrics: Mapping[str, Any], op: Mapping[str, Any] | None) -> list[Section]:
    names = list(metrics.get("label_names") or [])
    per = metrics.get("per_label") or {}
    boot = metrics.get("bootstrap") or {}
    level = int(round(float(boot.get("level", 0.95)) * 100))
    rows = []
    for n in names:
        m = per.get(n) or {}
        ne = m.get("not_estimable") or {}
        rows.append([n, f"{m.get('positives')}/{m.get('negatives')}", with_ci(m.get("auc"), m.get("auc_ci"),
                                                                               ne.get("auc")),
                     with_ci(m.get("sensitivity"), m.get("sensitivity_ci"), ne.get("sensitivity")),
                     with_ci(m.get("specificity"), m.get("specificity_ci"), ne.get("specificity")),
                     with_ci(m.get("ppv"), m.get("ppv_ci"), ne.get("ppv")),
                     with_ci(m.get("npv"), m.get("npv_ci"), ne.get("npv")), num(m.get("f1"))])
    summary = [["images evaluated", str(metrics.get("n"))],
               [f"mean AUC over {len(metrics.get('mean_auc_labels') or [])} of {len(names)} labels",
                with_ci(metrics.get("mean_auc"), metrics.get("mean_auc_ci"))],
               ["micro-averaged AUC", with_ci(metrics.get("micro_auc"), metrics.get("micro_auc_ci"))],
               ["accuracy at the thresholds", num(metrics.get("accuracy"))]]
    out: list[Section] = [{
        "title": "Performance per label", "items": "TRIPOD+AI 12e, 23a; CLAIM 28, 29, 35, 36",
        "text": [f"On the evaluated split ({metrics.get('n')} images, task {metrics.get('task')}). {level}% intervals: "
                 "DeLong for each label's AUC, Wilson for sensitivity, specificity, PPV, NPV; a percentile bootstrap "
                 f"({boot.get('n_resamples', 'n/a')} resamples of {boot.get('unit', 'image')}s) for the mean AUC. "
                 "Positives/negatives beside every label."],
        "tables": [(["figure", "value"], summary),
                   (["label", "test pos/neg", "AUC", "sensitivity", "specificity", "PPV", "NPV", "F1"], rows)]}]
    chosen = {c.get("label"): c for c in (op or {}).get("labels", [])}
    rows = []
    for n in names:
        m, c = per.get(n) or {}, chosen.get(n, {})
        val = f"{c['positives']}/{c['negatives']}" if "positives" in c else "n/a"
        rows.append([n, num(m.get("threshold"), 4), str(m.get("threshold_chosen_by") or "n/a"),
                     str(c.get("method") or (op or {}).get("operating_point") or "n/a"), val,
                     str(m.get("threshold_fallback") or "")])
    split = (op or {}).get("split")
    out.append({"title": "Thresholds and how they were chosen", "items": "TRIPOD+AI 15, 12e; CLAIM 28",
                "text": [f"Chosen once on the {split} split and stored in the model file; never re-chosen on the "
                         "evaluated split." if split else "Not chosen on validation (default or stored thresholds)."],
                "tables": [(["label", "threshold", "chosen by", "method", "validation pos/neg", "fallback"], rows)]})
    cal = metrics.get("calibration") or {}
    rows = [[n, num((per.get(n) or {}).get("ece")), num((per.get(n) or {}).get("brier")),
             num((per.get(n) or {}).get("calibration_intercept")), num((per.get(n) or {}).get("calibration_slope"))]
            for n in names]
    out.append({"title": "Calibration", "items": "TRIPOD+AI 12e, 12f, 23a; CLAIM 28, 29",
                "text": [f"Expected calibration error (mean over labels) {num(cal.get('ece'))}, Brier score "
                         f"{num(cal.get('brier'))}; temperature {num(metrics.get('temperature'))} fitted on the "
                         "validation split (1: none). The reliability diagram is in report.html."],
                "tables": [(["label", "ECE", "Brier", "intercept (0 ideal)", "slope (1 ideal)"], rows)]})
    subs = metrics.get("subgroups") or []
    rows = [[str(s.get("column")), str(s.get("value")), str(s.get("n")), num(s.get("mean_auc"))]
            + [f"{num(((s.get('per_label') or {}).get(n) or {}).get('auc'))} "
               f"({((s.get('per_label') or {}).get(n) or {}).get('positives')}/"
               f"{((s.get('per_label') or {}).get(n) or {}).get('negatives')})" for n in names] for s in subs]
    out.append({"title": "Subgroups", "items": "TRIPOD+AI 14, 23a; CLAIM 30, 34",
                "text": ["AUC (positives/negatives) per subgroup." if subs else
                         "No subgroup analysis: set `subgroups` (e.g. sex, view, age bands) in the evaluate workflow."],
                "tables": [(["column", "value", "n", "mean AUC", *names], rows)] if subs else []})
    return out


def _limitations(model: Mapping[str, Any] | None, data: Mapping[str, Any] | None,
                 metrics: Mapping[str, Any] | None) -> Section:
    items = ["Research use only: not a medical device, not validated for clinical decisions.",
             "Performance holds for data like the development data; another site, scanner, population or "
             "preprocessing can change it: validate externally (the external workflow) before any use."]
    if metrics:
        fb = metrics.get("threshold_fallbacks") or {}
        if fb:
            items.append("Thresholds not chosen on validation (too few cases): " + ", ".join(sorted(fb)) + ".")
        ex = metrics.get("mean_auc_excluded") or {}
        if ex:
            items.append("Too few test cases for a headline AUC: " + ", ".join(sorted(ex)) + ".")
        if not metrics.get("subgroups"):
            items.append("No subgroup (fairness) analysis was run.")
        if not metrics.get("external"):
            items.append("No external validation recorded in this evaluation.")
    else:
        items.append("No evaluation given: no performance figures.")
    if data and any(s.get("with_patient_id", 1) == 0 for s in (data.get("splits") or {}).values()):
        items.append("Some splits have no patient ids: patient-disjointness could not be checked there.")
    if model and not model.get("preset"):
        items.append("The model file does not record its preprocessing preset: run it with the bundle configuration "
                     "it was trained with.")
    return {"title": "Known limitations", "items": "TRIPOD+AI 26, 27a; CLAIM 38", "text": [], "list": items,
            "tables": []}


def build_card(model: Mapping[str, Any] | None, metrics: Mapping[str, Any] | None = None,
               op: Mapping[str, Any] | None = None, data: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The card as data: ``{"title", "sections": [Section], "values": {...}}`` (``values``: what it shows, for
    ``model_card.json``; the figures are those of ``metrics.json``, copied)."""
    names = list((model or {}).get("label_names") or (metrics or {}).get("label_names") or [])
    task = (model or {}).get("task") or (metrics or {}).get("task") or "multilabel"
    intended = {"title": "Intended use", "items": "TRIPOD+AI 3b, 4, 27b; CLAIM 3, 4",
                "text": [f"Predicts {', '.join(names) or 'its labels'} ({task}) from "
                         f"{(model or {}).get('spatial_dims', '?')}D images"
                         + (f" with the {model['preset']} preset" if (model or {}).get("preset") else "")
                         + ": a probability per label and a 0/1 decision at the stored threshold. Intended for "
                         "research and for assisting (never replacing) a qualified reader on the population and "
                         "imaging the training data represent; input problems (unreadable files, wrong dimension) "
                         "stop with a message rather than a guess."], "tables": []}
    sections = [intended, *model_data_sections(model, data, metrics)]
    if metrics:
        sections += _performance_sections(metrics, op or metrics.get("operating_points"))
    elif model and model.get("thresholds"):  # no evaluation: the thresholds the model file stores
        prov = model.get("operating_points") or {}
        chosen = prov.get("labels") or {}
        rows = [[n, num(t, 4), str((chosen.get(n) or {}).get("chosen_by") or "not recorded"),
                 str((chosen.get(n) or {}).get("method") or model.get("threshold_method") or "not recorded")]
                for n, t in model["thresholds"].items()]
        sections.append({"title": "Thresholds and how they were chosen", "items": "TRIPOD+AI 15; CLAIM 28",
                         "text": [f"Stored in the model file (chosen on the {prov['split']} split)."
                                  if prov.get("split") else
                                  "Stored in the model file; not chosen on validation yet (run evaluate)."],
                         "tables": [(["label", "threshold", "chosen by", "method"], rows)]})
    sections.append(_limitations(model, data, metrics))
    values = {"model": dict(model or {}), "data": data}
    if metrics:
        values["metrics"] = {k: metrics.get(k) for k in ("n", "task", "mean_auc", "mean_auc_ci", "micro_auc",
                                                         "accuracy", "calibration", "temperature", "label_names")}
        values["per_label"] = metrics.get("per_label")
        values["subgroups"] = metrics.get("subgroups") or []
    title = f"Model card: {(model or {}).get('arch') or 'medclass model'} for {', '.join(names)}"
    return {"title": title, "sections": sections, "values": values}


# ------------------------------------------------------------------------------------------------ rendering
def _md_cell(v: str) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def render_markdown(card: Mapping[str, Any]) -> str:
    """The card as Markdown (GitHub tables)."""
    lines = [f"# {card['title']}", "",
             f"Generated by medclass {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC from the model "
             "file and its evaluation. Reporting items: TRIPOD+AI (2024) and CLAIM (2020).", ""]
    for s in card["sections"]:
        lines += [f"## {s['title']}", "", f"*Answers {s['items']}.*", ""]
        for t in s.get("text", []):
            lines += [t, ""]
        for item in s.get("list", []):
            lines.append(f"- {item}")
        if s.get("list"):
            lines.append("")
        for header, rows in s.get("tables", []):
            lines.append("| " + " | ".join(map(_md_cell, header)) + " |")
            lines.append("|" + "|".join("---" for _ in header) + "|")
            lines += ["| " + " | ".join(map(_md_cell, r)) + " |" for r in rows]
            lines.append("")
    return "\n".join(lines)


def sections_html(sections: Sequence[Section], level: int = 2) -> str:
    """Sections as HTML (tables in scrolling boxes, as in the report)."""
    parts = []
    for s in sections:
        parts.append(f"<h{level}>{html.escape(s['title'])}</h{level}>"
                     f'<p class="note">Answers {html.escape(s["items"])}.</p>')
        parts += [f"<p>{html.escape(t)}</p>" for t in s.get("text", [])]
        if s.get("list"):
            parts.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in s["list"]) + "</ul>")
        for header, rows in s.get("tables", []):
            parts.append(table([html.escape(h) for h in header], [[html.escape(c) for c in r] for r in rows]))
    return "\n".join(parts)


def render_html(card: Mapping[str, Any]) -> str:
    """The card as one self-contained HTML page (the report's style)."""
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(card["title"])}'
            f"</title><style>{CSS}</style></head><body><h1>{html.escape(card['title'])}</h1>"
            '<p class="note">Reporting items: TRIPOD+AI (2024) and CLAIM (2020).</p>'
            + sections_html(card["sections"]) + "</body></html>")


def write_model_card(model_path: str | os.PathLike | None, eval_dir: str | os.PathLike | None = None,
                     out_dir: str | os.PathLike | None = None) -> list[Path]:
    """Write ``model_card.md``, ``model_card.html`` and ``model_card.json``.

    Args:
        model_path: the model file (``model.pt``); ``None``: the evaluation folder's ``model.json``.
        eval_dir: the evaluation folder (``metrics.json``, ``thresholds.json``, ``data.json``), or ``None``.
        out_dir: where to write (default: ``eval_dir``, else the model's folder).

    Returns:
        The paths written.
    """
    ev = Path(eval_dir) if eval_dir is not None else None
    if ev is not None and not ev.is_dir():
        raise FileNotFoundError(f"{ev}: no evaluation folder")
    if model_path is not None:
        model = model_summary(read_model(model_path))
    else:
        model = read_json(ev / MODEL_FILE) if ev is not None else None
    metrics = read_json(ev / "metrics.json") if ev is not None else None
    op = read_json(ev / "thresholds.json") if ev is not None else None
    data = read_json(ev / DATA_FILE) if ev is not None else None
    if data is None and model_path is not None:
        data = _split_csv_summary(Path(model_path).parent / "split.csv")
    card = build_card(model, metrics, op, data)
    out = Path(out_dir) if out_dir is not None else (ev if ev is not None else Path(model_path).parent)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f for f in CARD_FILES]
    atomic_text(paths[0], render_markdown(card))
    atomic_text(paths[1], render_html(card))
    atomic_json(paths[2], card["values"], allow_nan=False, default=str)
    logger.info("model card written to %s", paths[0])
    return paths

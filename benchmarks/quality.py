"""Train and evaluate through the bundles (the configs a user runs) on real data; print figures.

    python benchmarks/quality.py pneumoniamnist          # ../shared/data/medmnist/pneumoniamnist.npz (2D bundle)
    python benchmarks/quality.py nih1000                 # 1,000 ChestX-ray14 images, 14 labels, patient-disjoint re-split
    python benchmarks/quality.py adrenalmnist3d          # ../shared/data/medmnist/adrenalmnist3d.npz (3D bundle)
    python benchmarks/quality.py --npz PATH              # any MedMNIST v2 npz: 2D or 3D (28^3, 64^3), binary,
                                                         # multi-class or multi-label; the bundle follows the array

The recipe is the bundles' self-configured one (medclass.plan): epochs, batch size, learning rate, warm-up, width,
augmentation, label smoothing, pos_weight and patience chosen from the data (count, image size, dimensionality,
task, label prevalence), written to WORKDIR/models/plan.json and reported under "recipe"; ResNet-18 with the stem
chosen from the image size, AdamW, warm-up + cosine, bf16 autocast on CPU, model selected on the validation mean
AUC. --recipe fixed trains the earlier fixed recipe instead (RECIPE below: width 32, 30 epochs, ...), for
comparison; --epochs and --set override either. The evaluate workflow then chooses each label's threshold on the
validation split (Youden's J) and evaluates the test split. The last line printed is one JSON object with dataset,
test_auc (+ 95% bootstrap CI; the mean over the labels with at least min_positives test positives and negatives,
test_auc_labels of them, the others named in test_auc_excluded; test_auc_all_defined is the mean over every label
with an AUC), test_micro_auc, test_acc (at 0.5, MedMNIST's ACC), test sensitivity/specificity at the
validation-chosen Youden thresholds (mean and per label), test ECE, epochs and train_seconds (plus per-label AUCs).
Data comes from MEDCLASS_DATA (default ../shared/data).

    python benchmarks/quality.py pneumoniamnist --seeds 3  # seeds 0, 1, 2 (from --seed): one JSON line each, then
                                                         # the last line: every figure's mean, std, min and max
                                                         # over the seeds ("seeds_summary") and each run's time

    python benchmarks/quality.py pneumoniamnist --seed 1 --evaluate-only --workdir DIR
                                                         # re-evaluate a trained workdir (DIR/models/model.pt)
                                                         # without training; same dataset, --seed and --set
    python benchmarks/quality.py pneumoniamnist --external ../shared/data/cxr14/labels_nih1000.csv
                                                         # and external validation on another site (NIH adults'
                                                         # Pneumonia labels for a model of Guangzhou children's
                                                         # X-rays) at the internal thresholds: JSON key "external"
    python benchmarks/quality.py pneumoniamnist --ensemble 3 --tta
                                                         # an ensemble of 3 seeds, and flip TTA: the JSON key
                                                         # "configurations" (single, single+TTA, ensemble,
                                                         # ensemble+TTA: test AUC/ACC/ECE, train seconds, inference
                                                         # ms per image), also printed as a table
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUNDLES = {2: ROOT / "bundles" / "cxr_classification", 3: ROOT / "bundles" / "volume_classification"}
sys.path.insert(0, str(ROOT))

from medclass import data_root  # noqa: E402
from medclass.bundle_tools import config_files  # noqa: E402
from medclass.networks import read_model_record  # noqa: E402
from medclass.plan import read_plan  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
import ensemble_configs  # noqa: E402  (--ensemble K, --tta: issue 21)

RECIPE = {  # --recipe fixed, both dimensionalities (the default, --recipe plan, leaves these to medclass.plan)
    "arch": "resnet18",
    "width": 32,
    "stem": "auto",
    "batch_size": 64,
    "learning_rate": 0.002,
    "weight_decay": 0.05,
    "warmup_epochs": 2,
    "label_smoothing": 0.1,
    "early_stop_patience": 10,
    "precision": "auto",
    "progress_bar": False,
    "num_workers": 0,
}
# pos_weight off: unweighted BCE keeps probabilities calibrated to prevalence, so accuracy at 0.5 (MedMNIST's
# ACC) is meaningful on the imbalanced 3D sets (AdrenalMNIST3D: 22% positive)
RECIPE_3D = {"batch_size": 32, "preset": "generic", "preset_options": {}, "channels_last": True, "pos_weight": False,
             "augment": {"rotate_deg": 10, "zoom": 0.1, "translate": 0.05}}
# what --recipe plan keeps of them: how (not what) a run computes, and the preset of MedMNIST volumes (0-255
# intensities, not the 3D bundle's Hounsfield units)
NOT_RECIPE = ("precision", "progress_bar", "num_workers", "channels_last", "preset", "preset_options")


def _npz_setup(path: Path) -> dict:
    from medclass.data import load_datalist

    dl = load_datalist(path)
    first = dl.splits["training"][0]["image"]
    dims = 3 if first.ndim == 3 and first.shape[-1] not in (3, 4) else 2  # (D,H,W) volume vs (H,W[,RGB]) image
    size = list(first.shape[:dims])
    return {"datalist": str(path), "label_names": dl.label_names, "spatial_dims": dims,
            "task": "multiclass" if dl.task == "multiclass" else "multilabel", "image_size": size}


def _nih_setup(root: Path) -> dict:
    from medclass.data import CXR14_LABELS

    return {"datalist": str(root / "cxr14" / "labels_nih1000.csv"), "dataset_dir": str(root / "cxr14"),
            "label_names": list(CXR14_LABELS), "task": "multilabel", "image_size": [64, 64], "resplit": True}


def run_workflow(bundle: Path, kind: str | list[str], overrides: dict) -> object:
    from monai.bundle import ConfigWorkflow

    kinds = [kind] if isinstance(kind, str) else list(kind)
    wf = ConfigWorkflow(
        config_file=config_files(bundle, *[f"{k}.yaml" for k in kinds]),
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=str(bundle / "configs" / "logging.conf"),
        workflow_type="train" if kinds == ["train"] else "inference",
        **overrides,
    )
    wf.initialize()
    wf.run()
    return wf


def _r(v, digits: int = 4):
    return round(v, digits) if v is not None else None


def evaluation_figures(eval_dir: Path, metrics: dict) -> dict:
    """The benchmark's test figures from an evaluation folder: AUC (+ CI), ACC at 0.5, sensitivity/specificity
    at the thresholds chosen on the validation split, ECE."""
    from medclass.metrics import accuracy_at
    from medclass.report import read_predictions

    pred = read_predictions(eval_dir / "predictions.csv")
    names = list(metrics["per_label"])
    out = {
        "test_auc": _r(metrics["mean_auc"]),
        "test_auc_ci95": [_r(v) for v in metrics["mean_auc_ci"]],
        # what test_auc averages: labels with >= min_positives test positives and negatives; the rest are named
        "test_auc_labels": len(metrics.get("mean_auc_labels", names)),
        "test_auc_excluded": sorted(metrics.get("mean_auc_excluded", {})),
        "test_auc_all_defined": _r(metrics.get("mean_auc_all_defined")),
        "test_micro_auc": _r(metrics.get("micro_auc")),
        "test_brier": _r(metrics["calibration"].get("brier")),
        "threshold_fallbacks": sorted(metrics.get("threshold_fallbacks", {})),
        "test_acc": _r(accuracy_at(pred["labels"], pred["probs"], 0.5, metrics["task"])),  # MedMNIST's ACC
        "test_acc_at_val_threshold": _r(metrics["accuracy"]),
        "test_sens_val_youden": _r(metrics["macro"]["sensitivity"]),
        "test_spec_val_youden": _r(metrics["macro"]["specificity"]),
        "test_ece": _r(metrics["calibration"]["ece"]),
        "val_thresholds": {n: _r(t) for n, t in metrics["thresholds"].items()},
        "bootstrap_unit": metrics["bootstrap"].get("unit"),
        "decisions": "arg-max" if metrics["task"] == "multiclass" else "validation Youden thresholds",
    }
    if len(names) > 1:
        pl = metrics["per_label"]
        out["per_label_auc"] = {k: _r(v["auc"]) for k, v in pl.items()}
        out["per_label_sens_val_youden"] = {k: _r(v["sensitivity"]) for k, v in pl.items()}
        out["per_label_spec_val_youden"] = {k: _r(v["specificity"]) for k, v in pl.items()}
    else:
        only = metrics["per_label"][names[0]]
        out["test_sens_ci95"] = [_r(v) for v in only["sensitivity_ci"]]
        out["test_spec_ci95"] = [_r(v) for v in only["specificity_ci"]]
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", nargs="?", choices=["pneumoniamnist", "nih1000", "adrenalmnist3d"],
                    help="a known real dataset")
    ap.add_argument("--npz", type=Path, help="any MedMNIST v2 npz file, 2D or 3D")
    ap.add_argument("--recipe", choices=["plan", "fixed"], default="plan",
                    help="plan: chosen from the data (medclass.plan, the bundles' default); fixed: RECIPE (30 epochs)")
    ap.add_argument("--epochs", type=int, default=None, help="max_epochs (default: the recipe's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=1,
                    help="train N models, seeds --seed .. --seed+N-1, and end with their mean and spread")
    ap.add_argument("--workdir", type=Path, help="where models and outputs go (default: a temporary folder; with "
                                                 "--seeds N > 1, WORKDIR/seed<S> per seed)")
    ap.add_argument("--evaluate-only", action="store_true",
                    help="skip training: evaluate WORKDIR/models/model.pt (rewrites its thresholds and WORKDIR/eval)")
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the AUC interval")
    ap.add_argument("--external", type=Path, default=None,
                    help="also validate on this second datalist (another site) at the stored thresholds, e.g. "
                         "the NIH1000 CSV for a PneumoniaMNIST model (its Pneumonia column)")
    ap.add_argument("--external-dir", type=Path, default=None, help="base folder of the external datalist's images")
    ap.add_argument("--reuse-members", nargs="+", type=Path, default=[], metavar="MODELS",
                    help="with --ensemble K: models folders of earlier runs (same data and recipe) whose finished seed "
                         "members are copied instead of trained again (MedMNIST's official splits only)")
    ap.add_argument("--set", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                    help="extra bundle override, VALUE parsed as JSON when possible")
    ensemble_configs.add_arguments(ap)
    args = ap.parse_args(argv)
    if not args.dataset and not args.npz:
        ap.error("name a dataset or give --npz PATH")
    if args.seeds < 1:
        ap.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.evaluate_only and not (args.workdir and all((w / "models" / "model.pt").exists() for w in _workdirs(args))):
        ap.error("--evaluate-only needs --workdir DIR with a trained DIR/models/model.pt (DIR/seed<S>/models/... "
                 "with --seeds)")

    if args.npz:
        if not args.npz.exists():
            ap.error(f"{args.npz}: no such file")
        name, setup = args.npz.stem, _npz_setup(args.npz)
    else:
        root = data_root(required=True)
        name = args.dataset
        setup = _nih_setup(root) if name == "nih1000" else _npz_setup(root / "medmnist" / f"{name}.npz")

    results = []
    # MedMNIST's official splits do not depend on split_seed: a seed ensemble's member depends on its seed alone,
    # so later seeds reuse the members earlier seeds trained (ensemble_configs.reuse_members)
    reuse = not setup.get("resplit")
    for seed, workdir in zip(range(args.seed, args.seed + args.seeds), _workdirs(args)):
        earlier = [*args.reuse_members, *(Path(r["workdir"]) / "models" for r in results)] if reuse else []
        result = run_one(args, name, dict(setup), seed, workdir, earlier)
        print(json.dumps(result), flush=True)
        results.append(result)
    if args.seeds == 1:
        return results[0]
    summary = seeds_summary(results)
    print(json.dumps(summary))
    return summary


def _workdirs(args) -> list[Path | None]:
    if args.seeds == 1:
        return [args.workdir]
    return [args.workdir / f"seed{s}" if args.workdir else None for s in range(args.seed, args.seed + args.seeds)]


def run_one(args, name: str, setup: dict, seed: int, workdir: Path | None, earlier: list[Path] = ()) -> dict:
    """Train (unless --evaluate-only) and evaluate one model with ``seed``; its figures. ``earlier``: the models
    folders of earlier seeds, whose ensemble members of the same seed are reused."""
    work = workdir or Path(tempfile.mkdtemp(prefix=f"medclass-quality-{name}-"))
    if work.exists() and not args.evaluate_only:
        shutil.rmtree(work / "models", ignore_errors=True)
    dims = setup.pop("spatial_dims", 2)
    bundle = BUNDLES[dims]
    fixed = {**RECIPE, **(RECIPE_3D if dims == 3 else {}), "max_epochs": 30}
    recipe = fixed if args.recipe == "fixed" else {k: v for k, v in fixed.items() if k in NOT_RECIPE}
    overrides = {**recipe, **setup, "seed": seed, "split_seed": seed,
                 "bundle_root": str(bundle), "ckpt_dir": str(work / "models"), "output_dir": str(work / "eval"),
                 "log_dir": str(work / "runs"), "resume": False, "operating_point": "youden",
                 "bootstrap_samples": args.bootstrap}
    if args.epochs is not None:
        overrides["max_epochs"] = args.epochs
    for key, value in args.set:
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value

    epochs = train_seconds = best_val = trainer = ensemble = None
    if not args.evaluate_only and args.ensemble > 1:  # the members one by one, stored as one model file
        ensemble = ensemble_configs.train(bundle, overrides, args, run_workflow, earlier)
        train_seconds, epochs = ensemble["train_seconds"], ensemble["epochs"]
    if not args.evaluate_only and args.ensemble <= 1:
        t0 = time.time()
        train = run_workflow(bundle, "train", overrides)
        train_seconds = time.time() - t0
        trainer = train.parser.get_parsed_content("train#trainer")
        evaluator = train.parser.get_parsed_content("validate#evaluator")
        epochs = trainer.state.epoch
        best_val = float(evaluator.state.best_metric)

    eval_overrides = {k: v for k, v in overrides.items() if k not in TRAINING_ONLY}
    t0 = time.time()
    run_workflow(bundle, "evaluate", eval_overrides)
    eval_seconds = time.time() - t0
    metrics = json.loads((work / "eval" / "metrics.json").read_text())
    # an ensemble's recipe is its members' (each member folder holds the plan.json its training wrote)
    plan = read_plan(work / "models") or read_plan(work / "models" / "members" / "member_0") or {}
    model = read_model_record(work / "models" / "model.pt")
    result = {
        "dataset": name,
        **evaluation_figures(work / "eval", metrics),
        "epochs": epochs,
        "train_seconds": round(train_seconds, 1) if train_seconds is not None else None,
        "eval_seconds": round(eval_seconds, 1),
        "best_val_auc": round(best_val, 4) if best_val is not None else None,
        "nonfinite_steps": trainer.nonfinite_steps if trainer is not None else None,
        "precision_fallbacks": trainer.precision_fallbacks if trainer is not None else None,
        "seed": seed,
        "recipe_source": args.recipe,
        "recipe": plan.get("settings"),
        "recipe_explicit": plan.get("explicit"),
        "arch": model.get("arch"),
        "width": model.get("width"),
        "stem": model.get("stem"),
        "image_size": overrides["image_size"],
        "bundle": bundle.name,
        "n_test": metrics["n"],
        "workdir": str(work),
        "evaluate_only": bool(args.evaluate_only),
    }
    if ensemble:
        result["member_train_seconds"] = ensemble["member_train_seconds"]
        result["reused_members"] = ensemble["reused_members"]  # trained for an earlier seed, copied
    if args.external:
        ext_dir = work / "eval_external"
        run_workflow(bundle, ["evaluate", "external"], {
            **eval_overrides, "external_datalist": str(args.external),
            "external_dataset_dir": str(args.external_dir or args.external.parent), "output_dir": str(ext_dir),
            "internal_eval_dir": str(work / "eval")})
        result["external"] = external_figures(json.loads((ext_dir / "metrics.json").read_text()), str(args.external))
    if ensemble_configs.active(args):
        single = ensemble["member_train_seconds"][0] if ensemble else train_seconds
        result["configurations"] = ensemble_configs.compare(bundle, eval_overrides, work, args, run_workflow,
                                                            evaluation_figures,
                                                            {"single": single, "ensemble": train_seconds})
        print(ensemble_configs.table(result["configurations"]))
    return result


# settings that only training reads: left out of the evaluate workflow's overrides
TRAINING_ONLY = ("max_epochs", "resume", "early_stop_patience", "learning_rate", "weight_decay", "warmup_epochs",
                 "label_smoothing", "progress_bar", "pos_weight", "augment")
# per-run figures summarised over seeds (numbers only; lists, names and paths are not)
SUMMARY_SKIP = ("seed", "n_test", "test_auc_labels", "nonfinite_steps", "precision_fallbacks", "width")


def seeds_summary(results: list[dict]) -> dict:
    """Mean, standard deviation (sample, ddof 1), min and max over seeds of every numeric figure the runs share.

    Returns:
        ``{"dataset", "seeds": [...], "n_seeds", "seeds_summary": {figure: {"mean", "std", "min", "max", "n"}},
        "per_seed": {figure: [one value per seed]}, "configurations": {config: {figure: stats}} (``--ensemble`` /
        ``--tta``), "seconds": [{"seed", "train_seconds", "eval_seconds"}, ...], "recipe"}``; a figure missing
        (``None``) in some runs is summarised over the others (``n``).
    """
    if not results:
        raise ValueError("no runs to summarise")
    keys = [k for k, v in results[0].items() if k not in SUMMARY_SKIP and _number(v)]
    keys += sorted({f"{k}.{n}" for r in results for k, v in r.items() if isinstance(v, dict) and k.startswith(
        "per_label_") for n, x in v.items() if _number(x)})
    summary, per_seed = {}, {}
    for key in keys:
        head, _, sub = key.partition(".")
        values = [(r.get(head) or {}).get(sub) if sub else r.get(head) for r in results]
        per_seed[key] = values
        if any(_number(v) for v in values):
            summary[key] = _stats(values)
    configurations = {}  # --ensemble / --tta: each configuration's figures over the seeds
    for row in (results[0].get("configurations") or []):
        rows = [next((c for c in r.get("configurations") or [] if c["config"] == row["config"]), {}) for r in results]
        configurations[row["config"]] = {
            fig: _stats([c.get(fig) for c in rows]) for fig in ("test_auc", "test_acc", "test_ece", "train_seconds",
                                                                "inference_ms_per_image")}
    return {"dataset": results[0].get("dataset"), "seeds": [r.get("seed") for r in results], "n_seeds": len(results),
            "seeds_summary": summary, "per_seed": per_seed, "configurations": configurations,
            "seconds": [{"seed": r.get("seed"), "train_seconds": r.get("train_seconds"),
                         "eval_seconds": r.get("eval_seconds")} for r in results],
            "recipe_source": results[0].get("recipe_source"), "recipe": [r.get("recipe") for r in results]}


def _stats(values: list) -> dict | None:
    """Mean, sample standard deviation, min, max and count of the numbers among ``values`` (``None``: none)."""
    import statistics

    known = [float(v) for v in values if _number(v)]
    if not known:
        return None
    return {"mean": round(statistics.fmean(known), 4), "std": round(statistics.stdev(known), 4) if len(known) > 1
            else None, "min": round(min(known), 4), "max": round(max(known), 4), "n": len(known)}


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


def external_figures(metrics: dict, source: str) -> dict:
    """Per label on the external set, at the thresholds chosen on the internal validation split: AUC, sensitivity
    and specificity with their intervals and counts, against the internal figures, and the prevalence shift."""
    ext = metrics.get("external", {})
    out = {"source": source, "n": metrics["n"], "thresholds_same": ext.get("thresholds_same"), "per_label": {}}
    for name, m in metrics["per_label"].items():
        internal = (ext.get("per_label", {}).get(name) or {}).get("internal") or {}
        prevalence = (ext.get("shift", {}).get("prevalence") or {}).get(name, {})
        out["per_label"][name] = {
            "positives": m.get("positives"), "negatives": m.get("negatives"),
            "auc": _r(m.get("auc")), "auc_ci95": [_r(v) for v in m.get("auc_ci", [None, None])],
            "sensitivity": _r(m.get("sensitivity")), "sensitivity_ci95": [_r(v) for v in m.get("sensitivity_ci", [])],
            "specificity": _r(m.get("specificity")), "specificity_ci95": [_r(v) for v in m.get("specificity_ci", [])],
            "internal_auc": _r(internal.get("auc")),
            "prevalence_training": _r((prevalence.get("training") or {}).get("prevalence")),
            "prevalence_external": _r((prevalence.get("external") or {}).get("prevalence")),
            "not_estimable": m.get("not_estimable") or {},
        }
    return out


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()

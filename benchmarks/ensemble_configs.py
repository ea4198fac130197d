"""quality.py's ``--ensemble K`` and ``--tta MODE``: train an ensemble through ``medclass.ensembles`` and compare, on
the same test split, the configurations a user chooses between (single model, single + TTA, ensemble, ensemble +
TTA) by test AUC / ACC, the uncertainty's referral curve, and what each costs: training seconds and inference
milliseconds per test image (the bundle's inference workflow on the test split: its engine run, data loading
included, the faster of two runs).

Kept apart from quality.py so its recipe can change without touching this; quality.py calls :func:`add_arguments`,
:func:`train` and :func:`compare`.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def add_arguments(ap) -> None:
    ap.add_argument("--ensemble", type=int, default=1, metavar="K",
                    help="train K members (seeds seed..seed+K-1, or --ensemble-by fold) stored as one model; also "
                         "evaluate member 0 alone, and print both with their times")
    ap.add_argument("--ensemble-by", default="seed", choices=["seed", "fold"], help="how the members differ")
    ap.add_argument("--tta", nargs="?", const="flip", default=None, metavar="MODE",
                    help="also evaluate with test-time augmentation (flip, the default; shift; flip_shift)")


def active(args) -> bool:
    return args.ensemble > 1 or args.tta is not None


#: written by :func:`train` in each member's folder: its training seconds and epochs
SECONDS_FILE = "train_seconds.json"


def reuse_members(ckpt_dir: Path, plan: list[dict], earlier: Sequence[Path]) -> list[int]:
    """Copy into this ensemble's member folders the finished members of earlier runs' seed ensembles that were
    trained with the same seed; returns the members reused.

    ``--seeds 3 --ensemble 3`` makes the ensembles of seeds 0-2, 1-3 and 2-4: without this, seeds 1 and 2 would
    train again members already trained for seed 0 (9 trainings instead of 5). Only for data whose splits do not
    depend on ``split_seed`` (MedMNIST's official splits): there a member depends on its seed alone.
    """
    from medclass.ensembles import MEMBER_FILE
    from medclass.files import atomic_json, read_json

    sources = [m for models in earlier for m in sorted((Path(models) / "members").glob("member_*"))]
    trained = [(src, read_json(src / MEMBER_FILE) or {}) for src in sources]
    reused = []
    for p in plan:
        dst = ckpt_dir / "members" / f"member_{p['member']}"
        if (dst / MEMBER_FILE).is_file():
            continue
        for src, done in trained:
            if done.get("by") == "seed" and done.get("seed") == p["seed"] and (src / "model.pt").is_file():
                dst.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src / "model.pt", dst / "model.pt")
                if (src / SECONDS_FILE).is_file():
                    shutil.copy2(src / SECONDS_FILE, dst / SECONDS_FILE)
                atomic_json(dst / MEMBER_FILE, p)  # last: the member counts as finished once this exists
                reused.append(p["member"])
                break
    return reused


def train(bundle: Path, overrides: dict, args, run_workflow: Callable, earlier: Sequence[Path] = ()) -> dict:
    """Train the ensemble (``args.ensemble`` >= 2) member by member, reusing earlier runs' members of the same seed
    (:func:`reuse_members`); returns training figures (every member's seconds, reused ones included)."""
    from medclass.ensembles import ensemble_plan, train_ensemble
    from medclass.files import atomic_json, read_json

    ckpt_dir = Path(overrides["ckpt_dir"])
    plan = ensemble_plan(args.ensemble, args.ensemble_by, overrides.get("seed", 0))
    reused = reuse_members(ckpt_dir, plan, earlier) if args.ensemble_by == "seed" and earlier else []

    def member(o: dict) -> None:
        t0 = time.time()
        wf = run_workflow(bundle, "train", o)
        figures = {"seconds": round(time.time() - t0, 1),
                   "epochs": wf.parser.get_parsed_content("train#trainer").state.epoch}
        atomic_json(Path(o["ckpt_dir"]) / SECONDS_FILE, figures)

    train_ensemble(bundle, {**overrides, "ensemble": {"members": args.ensemble, "by": args.ensemble_by}}, member)
    figures = [read_json(ckpt_dir / "members" / f"member_{p['member']}" / SECONDS_FILE) or {} for p in plan]
    seconds = [f.get("seconds") for f in figures]
    return {"train_seconds": sum(s for s in seconds if s is not None), "member_train_seconds": seconds,
            "epochs": [f.get("epochs") for f in figures], "reused_members": reused}


def _inference_seconds(bundle: Path, overrides: dict, work: Path, tag: str, run_workflow: Callable,
                       repeats: int = 2) -> tuple[float, int]:
    """Seconds of the inference workflow's engine run on the test split (data loading, forward passes and the
    predictions writer; not the workflow's start-up), the fastest of ``repeats`` runs, and the number of images."""
    import csv

    best = float("inf")
    for rep in range(repeats):
        out = work / f"infer_{tag}_{rep}"
        wf = run_workflow(bundle, "inference", {**overrides, "output_dir": str(out)})
        best = min(best, float(wf.parser.get_parsed_content("evaluator").state.times["COMPLETED"]))
    with open(out / "predictions.csv", newline="") as f:
        n = sum(1 for _ in csv.DictReader(f))
    return best, n


def compare(bundle: Path, eval_overrides: dict, work: Path, args, run_workflow: Callable, figures: Callable,
            train_seconds: dict) -> list[dict]:
    """Evaluate every configuration into ``work/eval_<config>`` and time its inference; one dict per configuration.

    Args:
        eval_overrides: quality.py's evaluate overrides (``ckpt_dir`` is the ensemble's or the single model's).
        figures: quality.py's ``evaluation_figures(eval_dir, metrics)``.
        train_seconds: ``{"single": s, "ensemble": s}`` (the ensemble: every member).
    """
    models = Path(eval_overrides["ckpt_dir"])
    configs = []
    if args.ensemble > 1:
        configs.append(("single", models / "members" / "member_0", "none"))
        configs.append((f"ensemble{args.ensemble}", models, "none"))
    else:
        configs.append(("single", models, "none"))
    if args.tta is not None:
        configs += [(f"{name}+tta_{args.tta}", ckpt, args.tta) for name, ckpt, _ in list(configs)]
    rows = {}
    # TTA first: each evaluation writes its thresholds and TTA mode into the model file, and the last one stays (what
    # `tta: auto` and later workflows use): the plain configurations' are left there
    for name, ckpt, tta in sorted(configs, key=lambda c: c[2] == "none"):
        over = {**eval_overrides, "ckpt_dir": str(ckpt), "output_dir": str(work / f"eval_{name}"), "tta": tta}
        run_workflow(bundle, "evaluate", over)
        metrics = json.loads((work / f"eval_{name}" / "metrics.json").read_text())
        fig = figures(work / f"eval_{name}", metrics)
        seconds, n = _inference_seconds(bundle, over, work, name, run_workflow)
        referral = metrics.get("referral") or {}
        row = {"config": name, "test_auc": fig["test_auc"], "test_auc_ci95": fig["test_auc_ci95"],
               "test_acc": fig["test_acc"], "test_ece": fig["test_ece"],
               "train_seconds": train_seconds.get("ensemble" if name.startswith("ensemble") else "single"),
               "inference_seconds": round(seconds, 2), "inference_ms_per_image": round(1000 * seconds / max(n, 1), 2)}
        if referral:
            idx = {f: i for i, f in enumerate(referral["fractions"])}
            row["referral_auc_0_10_20"] = [referral["mean_auc"][idx[f]] for f in (0.0, 0.1, 0.2) if f in idx]
            row["referral_acc_0_10_20"] = [referral["accuracy"][idx[f]] for f in (0.0, 0.1, 0.2) if f in idx]
        rows[name] = row
    return [rows[name] for name, _, _ in configs]


def table(rows: list[dict]) -> str:
    """The configurations as a plain text table (one line each) for the log."""
    lines = [f"{'configuration':<24} {'test AUC':>8} {'ACC':>6} {'ECE':>6} {'train s':>8} {'infer ms/img':>12}"]
    for r in rows:
        train = "" if r["train_seconds"] is None else f"{r['train_seconds']:.0f}"
        lines.append(f"{r['config']:<24} {r['test_auc'] or float('nan'):>8.4f} {r['test_acc'] or float('nan'):>6.3f} "
                     f"{r['test_ece'] or float('nan'):>6.3f} {train:>8} {r['inference_ms_per_image']:>12.2f}")
    return "\n".join(lines)

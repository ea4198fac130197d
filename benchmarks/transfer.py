"""Transfer learning on real data through the bundles: pretrain on a larger source, fine-tune with little data.

    python benchmarks/transfer.py                                  # the full measurement (hours on 2 CPU cores)
    python benchmarks/transfer.py --quick                          # tiny subsets, 1 epoch: a smoke run
    python benchmarks/transfer.py --targets pneumoniamnist --seeds 0 --pretrain-per-class 1000 \\
        --pretrain-epochs 2 --epochs 4                             # a reduced run (what BENCHMARKS.md records)

1. Pretrain in the project: the chest X-ray bundle's train workflow on MedNIST (58,954 64x64 grey images of 6
   classes, ``$MEDCLASS_DATA/mednist/MedNIST_repacked.tar.gz``, extracted once into the work folder; or
   ``--source`` a class-per-folder tree), resized to each target's image size, multi-class, one model per size.
2. Fine-tune on each target with 5%, 20% and 100% of its training images (validation and test splits whole):
   PneumoniaMNIST (``medmnist/pneumoniamnist.npz``, binary, 28 px) and NIH1000 (``cxr14/labels_nih1000.csv``, the
   14 ChestX-ray14 findings, 64 px, re-split patient-disjoint with the seed). Variants, same recipe otherwise:

   * ``scratch``: random initialisation (the same-run baseline);
   * ``frozen``: the MedNIST backbone frozen, a new head trained (a linear probe: ``freeze: backbone``) at
     ``--probe-lr-scale`` (default 10) times the recipe's learning rate: a new head alone on fixed features needs
     larger steps than fine-tuning (at the recipe's rate, 24 steps left it near its random start);
   * ``partial``: stem and first stage frozen (``freeze: stages:2``), the rest at a tenth of the head's learning
     rate (``backbone_lr_scale: 0.1``);
   * ``full``: everything trained at the recipe's learning rate.

   Every pretrained run starts with ``pretrained: <MedNIST model.pt>`` and ``pretrained_skip_head: true`` (another
   label set). The recipe is benchmarks/quality.py's (ResNet-18 width 32, AdamW, warm-up + cosine, bf16 on CPU).
3. Evaluate each run on the test split (evaluate workflow: thresholds on validation, bootstrap 95% CI of the mean
   AUC) and print one table: test AUC, its interval, train seconds; per target and variant whether "pretrained at
   20% closes at least half the gap between scratch at 20% and scratch at 100%" (means over seeds). The last line
   printed is one JSON object with every run.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from medclass import data_root  # noqa: E402
from medclass.data import CXR14_LABELS, ensure_splits, load_datalist  # noqa: E402
from quality import BUNDLES, RECIPE, evaluation_figures, run_workflow  # noqa: E402  (benchmarks/quality.py)
from quality import _npz_setup as npz_setup  # noqa: E402  (the MedMNIST setup quality.py uses)

VARIANTS = {
    "scratch": {},
    "frozen": {"freeze": "backbone"},
    "partial": {"freeze": "stages:2", "backbone_lr_scale": 0.1},
    "full": {},
}
TARGETS = ("pneumoniamnist", "nih1000")
EVAL_DROP = ("max_epochs", "resume", "early_stop_patience", "learning_rate", "weight_decay", "warmup_epochs",
             "label_smoothing", "progress_bar", "pretrained", "pretrained_skip_head", "freeze", "backbone_lr_scale",
             "unfreeze_epoch")


# ------------------------------------------------------------------ data
def mednist_folder(source: Path, work: Path, per_class: int | None) -> Path:
    """A class-per-folder MedNIST tree: ``source`` itself (a folder), or the tarball's first ``per_class`` images
    of each class extracted under ``work`` (all with ``None``; reused when already there)."""
    if source.is_dir():
        return source
    dest = work / f"mednist_{per_class or 'all'}"
    done = dest / ".complete"
    if done.exists():
        return dest / "MedNIST"
    shutil.rmtree(dest, ignore_errors=True)
    counts: dict[str, int] = {}
    with tarfile.open(source, "r:gz") as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) != 3 or not parts[2].lower().endswith((".jpeg", ".jpg", ".png")):
                continue
            n = counts.get(parts[1], 0)
            if per_class is not None and n >= per_class:
                continue
            counts[parts[1]] = n + 1
            out = dest.joinpath(*parts)
            out.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as f:
                out.write_bytes(f.read())
    done.write_text(json.dumps(counts))
    logging.info("MedNIST: %s images per class in %s", counts, dest)
    return dest / "MedNIST"


def _subsample(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of ``fraction`` of the rows, stratified by the first label column (at least 2 per stratum
    where there are 2)."""
    if fraction >= 1.0:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    first = np.nan_to_num(np.asarray(labels, dtype=float).reshape(len(labels), -1)[:, 0], nan=-1)
    keep = []
    for value in np.unique(first):
        rows = np.flatnonzero(first == value)
        n = min(len(rows), max(2, round(fraction * len(rows))))
        keep.extend(rng.choice(rows, n, replace=False))
    return np.sort(np.asarray(keep, dtype=int))


def npz_target(npz: Path, work: Path, fraction: float, seed: int, limit: int | None = None) -> dict:
    """A MedMNIST npz with ``fraction`` of its training images (validation and test whole; each split cut to
    ``limit`` images first where given: --quick)."""
    src = np.load(npz)
    arrays = {}
    for split in ("train", "val", "test"):
        x, y = src[f"{split}_images"], src[f"{split}_labels"]
        if limit is not None:
            idx = _subsample(y, min(1.0, limit / len(y)), seed)
            x, y = x[idx], y[idx]
        if split == "train":
            idx = _subsample(y, fraction, seed)
            x, y = x[idx], y[idx]
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y
    out = work / f"{npz.stem}_{fraction:g}_seed{seed}.npz"
    np.savez(out, **arrays)
    setup = npz_setup(out)
    setup.pop("spatial_dims", None)
    return {**setup, "n_train": len(arrays["train_labels"])}


def nih_target(root: Path, work: Path, fraction: float, seed: int, limit: int | None = None) -> dict:
    """NIH1000 re-split patient-disjoint (seeded), ``fraction`` of the training images kept, written as a CSV with
    a split column (so that the bundle keeps exactly these splits)."""
    names = list(CXR14_LABELS)
    dl = load_datalist(root / "cxr14" / "labels_nih1000.csv", names, dataset_dir=root / "cxr14")
    dl = ensure_splits(dl, fractions=(0.7, 0.15, 0.15), seed=seed, resplit=True)
    out = work / f"nih1000_{fraction:g}_seed{seed}.csv"
    n_train = 0
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "patient_id", "split", *names])
        for split, items in dl.splits.items():
            labels = np.stack([np.asarray(it["label"], dtype=float) for it in items])
            idx = np.arange(len(items))
            if limit is not None:
                idx = _subsample(labels, min(1.0, limit / len(items)), seed)
            if split == "training":
                idx = idx[_subsample(labels[idx], fraction, seed)]
                n_train = len(idx)
            for i in idx:
                it = items[i]
                vals = ["" if np.isnan(v) else int(v) for v in labels[i]]
                w.writerow([it["image"], it.get("patient_id", it["id"]), split, *vals])
    return {"datalist": str(out), "dataset_dir": str(root / "cxr14"), "label_names": names, "task": "multilabel",
            "image_size": [64, 64], "resplit": False, "n_train": n_train}


# ------------------------------------------------------------------ runs
def train_and_evaluate(bundle: Path, overrides: dict, work: Path) -> dict:
    """One bundle train + evaluate run in ``work``; the test figures (quality.py's) and train seconds."""
    shutil.rmtree(work, ignore_errors=True)
    o = {**overrides, "ckpt_dir": str(work / "models"), "output_dir": str(work / "eval"), "log_dir": str(work / "runs")}
    t0 = time.time()
    wf = run_workflow(bundle, "train", o)
    seconds = time.time() - t0
    epochs = wf.parser.get_parsed_content("train#trainer").state.epoch
    run_workflow(bundle, "evaluate", {k: v for k, v in o.items() if k not in EVAL_DROP})
    metrics = json.loads((work / "eval" / "metrics.json").read_text())
    fig = evaluation_figures(work / "eval", metrics)
    return {"test_auc": fig["test_auc"], "test_auc_ci95": fig["test_auc_ci95"], "test_acc": fig["test_acc"],
            "test_auc_labels": fig["test_auc_labels"], "n_test": metrics["n"], "epochs": epochs,
            "train_seconds": round(seconds, 1)}


def pretrain(bundle: Path, folder: Path, size: list[int], base: dict, epochs: int, work: Path) -> tuple[Path, dict]:
    """The MedNIST multi-class model at ``size`` (reused when ``work`` holds it)."""
    model = work / "models" / "model.pt"
    record = work / "pretrain.json"
    if model.exists() and record.exists():
        return model, json.loads(record.read_text())
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    o = {**base, "datalist": str(folder), "dataset_dir": str(folder), "label_names": classes, "task": "multiclass",
         "image_size": size, "max_epochs": epochs, "warmup_epochs": 1 if epochs > 2 else 0, "pos_weight": False,
         "skip_unreadable": True}  # MedNIST holds blank images (one grey value): left out, listed in skipped.csv
    res = train_and_evaluate(bundle, o, work)
    res["classes"] = classes
    record.write_text(json.dumps(res))
    return model, res


def _mean(vals: list) -> float | None:
    vals = [v for v in vals if v is not None]
    return statistics.fmean(vals) if vals else None


def gap_closure(runs: list[dict], target: str, variant: str, low: float = 0.2) -> dict:
    """How much of the gap between scratch at ``low`` and scratch at 100% the variant at ``low`` closes (means over
    seeds); not estimable where scratch at ``low`` is not below scratch at 100%."""
    def auc(v: str, f: float) -> float | None:
        return _mean([r["test_auc"] for r in runs
                      if r["target"] == target and r["variant"] == v and r["fraction"] == f])

    s_low, s_full, p_low = auc("scratch", low), auc("scratch", 1.0), auc(variant, low)
    out = {"scratch_low": s_low, "scratch_full": s_full, "pretrained_low": p_low, "closed": None, "half": None}
    if None in (s_low, s_full, p_low) or s_full - s_low <= 0:
        out["note"] = "not estimable: scratch at the low fraction is not below scratch at 100%"
        return out
    out["closed"] = round((p_low - s_low) / (s_full - s_low), 3)
    out["half"] = out["closed"] >= 0.5
    return out


def print_table(runs: list[dict], pre: dict, fractions: list[float], variants: list[str]) -> dict:
    """The figures, scratch first in each block; and the gap-closure verdicts (returned)."""
    verdicts: dict = {}
    for target in dict.fromkeys(r["target"] for r in runs):
        p = pre.get(target, {})
        print(f"\n{target}: pretrained on MedNIST ({p.get('n_classes', '?')} classes, test AUC {p.get('test_auc')}, "
              f"{p.get('epochs')} epochs, {p.get('train_seconds')} s)")
        print(f"{'fraction':>8} {'n_train':>7} {'variant':>8} {'test AUC':>9} {'95% CI (seed ' + 'each)':>24} "
              f"{'seeds':>5} {'sd':>6} {'epochs':>6} {'train s':>8}")
        for f in fractions:
            for v in variants:
                rs = [r for r in runs if r["target"] == target and r["fraction"] == f and r["variant"] == v]
                if not rs:
                    continue
                aucs = [r["test_auc"] for r in rs if r["test_auc"] is not None]
                m = _mean(aucs)
                sd = statistics.stdev(aucs) if len(aucs) > 1 else None
                cis = " ".join(f"[{r['test_auc_ci95'][0]:.3f},{r['test_auc_ci95'][1]:.3f}]" for r in rs
                               if None not in r["test_auc_ci95"]) or "not estimable"
                seconds = _mean([r["train_seconds"] for r in rs])
                print(f"{f:>8.0%} {rs[0]['n_train']:>7} {v:>8} {m if m is None else round(m, 4)!s:>9} {cis:>24} "
                      f"{len(rs):>5} {'' if sd is None else f'{sd:.3f}':>6} {rs[0]['epochs']:>6} {seconds:>8.0f}")
        if 0.2 in fractions and 1.0 in fractions and "scratch" in variants:
            for v in variants:
                if v == "scratch":
                    continue
                g = gap_closure(runs, target, v)
                verdicts[f"{target}/{v}"] = g
                if g["closed"] is None:
                    print(f"  {v} at 20%: {g['note']}")
                else:
                    print(f"  {v} at 20% closes {g['closed']:.0%} of the gap between scratch at 20% "
                          f"({g['scratch_low']:.4f}) and scratch at 100% ({g['scratch_full']:.4f}): "
                          f"at least half: {'yes' if g['half'] else 'no'}")
    return verdicts


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    ap.add_argument("--npz", type=Path, default=None, help="a MedMNIST npz target instead of --targets")
    ap.add_argument("--source", type=Path, default=None,
                    help="pretraining source: MedNIST tarball or a class-per-folder tree (default: "
                         "$MEDCLASS_DATA/mednist/MedNIST_repacked.tar.gz)")
    ap.add_argument("--fractions", nargs="+", type=float, default=[0.05, 0.2, 1.0])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--pretrain-per-class", type=int, default=None, help="MedNIST images per class (default all)")
    ap.add_argument("--pretrain-epochs", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=30, help="fine-tuning (and scratch) epochs")
    ap.add_argument("--probe-lr-scale", type=float, default=10.0,
                    help="the frozen variant's (linear probe's) learning rate = the recipe's times this")
    ap.add_argument("--min-steps", type=int, default=0,
                    help="raise the epochs of small fractions so that every run takes at least this many optimizer "
                         "steps (0: the same epochs at every fraction)")
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the AUC intervals")
    ap.add_argument("--limit", type=int, default=None,
                    help="cut each target split (training, validation, test) to about this many images first "
                         "(stratified); the fractions are then of the cut training split")
    ap.add_argument("--quick", action="store_true", help="tiny subsets, 1 epoch, width 8: a smoke run")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--set", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                    help="extra bundle override for every run, VALUE parsed as JSON when possible")
    args = ap.parse_args(argv)
    limit = args.limit
    if args.quick:
        args.pretrain_per_class = args.pretrain_per_class or 30
        args.pretrain_epochs = args.epochs = 1
        args.bootstrap = min(args.bootstrap, 50)
        limit = limit or 120
    root = data_root(required=args.source is None or args.npz is None)
    source = args.source or root / "mednist" / "MedNIST_repacked.tar.gz"
    work = args.workdir or Path(tempfile.mkdtemp(prefix="medclass-transfer-"))
    work.mkdir(parents=True, exist_ok=True)
    bundle = BUNDLES[2]
    base = {**RECIPE, "bundle_root": str(bundle), "resume": False, "operating_point": "youden",
            "bootstrap_samples": args.bootstrap}
    if args.quick:
        base.update({"width": 8, "batch_size": 16, "min_positives": 2})
    for key, value in args.set:
        try:
            base[key] = json.loads(value)
        except json.JSONDecodeError:
            base[key] = value

    targets = {args.npz.stem: ("npz", args.npz)} if args.npz else {
        t: ("nih", root) if t == "nih1000" else ("npz", root / "medmnist" / f"{t}.npz") for t in args.targets}
    folder = mednist_folder(source, work, args.pretrain_per_class)
    runs: list[dict] = []
    pre: dict = {}
    for target, (kind, where) in targets.items():
        for seed in args.seeds:
            per_fraction = {f: (nih_target(where, work, f, seed, limit) if kind == "nih"
                                else npz_target(where, work, f, seed, limit)) for f in args.fractions}
            size = per_fraction[args.fractions[0]]["image_size"]
            # one source model per image size (seed 0), shared by every fine-tuning seed
            model, record = pretrain(bundle, folder, size, {**base, "seed": 0, "split_seed": 0},
                                     args.pretrain_epochs, work / f"pretrain_{size[0]}px")
            pre[target] = {**record, "n_classes": len(record["classes"]), "image_size": size}
            for f, setup in per_fraction.items():
                n_train = setup.pop("n_train")
                epochs = max(args.epochs, math.ceil(args.min_steps / math.ceil(n_train / base["batch_size"])))
                for v in args.variants:
                    o = {**base, **setup, **VARIANTS[v], "seed": seed, "split_seed": seed, "max_epochs": epochs,
                         "warmup_epochs": 1 if epochs > 2 else 0}
                    if v != "scratch":
                        o.update({"pretrained": str(model), "pretrained_skip_head": True})
                    if v == "frozen":
                        o["learning_rate"] = base["learning_rate"] * args.probe_lr_scale
                    res = train_and_evaluate(bundle, o, work / target / f"{f:g}" / v / f"seed{seed}")
                    runs.append({"target": target, "fraction": f, "variant": v, "seed": seed, "n_train": n_train,
                                 **res})
                    logging.info("transfer: %s", json.dumps(runs[-1]))
    verdicts = print_table(runs, pre, args.fractions, args.variants)
    result = {"runs": runs, "pretraining": pre, "gap_closure": verdicts, "workdir": str(work),
              "settings": {k: v for k, v in vars(args).items() if k not in ("workdir",)}}
    print(json.dumps(result, default=str))
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()

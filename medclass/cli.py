"""``medclass`` command line: run and tune bundle workflows, bundle checks and export, data preparation reports and split
files, phantom data, evaluation reports and model comparison."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from medclass.vocab import TASKS


def _verify(args) -> int:
    from medclass import bundle_tools as bt

    stale = bt.sync_bundle(args.bundle, check=True)
    print(f"configs: {'out of date: ' + ', '.join(stale) + ' (run medclass sync-bundles)' if stale else 'in sync'}")
    ok = not stale
    for workflow in ("train", "inference", "evaluate"):
        missing = bt.check_properties(args.bundle, workflow)
        print(f"check_properties {workflow}: {'ok' if not missing else 'MISSING ' + ', '.join(map(str, missing))}")
        ok &= not missing
    bt.verify_metadata(args.bundle)
    print("verify_metadata: ok")
    conf = Path(args.bundle) / "configs" / "logging.conf"
    if conf.is_file():
        from medclass.logconf import check_logging_file

        check_logging_file(conf, forbidden=[Path(args.bundle) / "models"])
        print("logging.conf: ok (console and .log files only, nothing in models/)")
    bt.verify_net_in_out(args.bundle)
    print("verify_net_in_out: ok")
    for line in bt.check_large_files(args.bundle):
        print(f"large_files.yml: {line}")
    model = Path(args.bundle) / "models" / "model.pt"
    if model.exists():
        # a released model.ts (named in large_files.yml) stays as it is: export next to it, as the Model Zoo does
        released = any(e["path"] == "models/model.ts" for e in bt.large_files(args.bundle))
        out = bt.export_torchscript(args.bundle,
                                    filepath=model.parent / ("verify_model.ts" if released else "model.ts"))
        print(f"TorchScript export: ok ({out})")
    else:
        print(f"TorchScript export: skipped ({model} not trained yet)")
    return 0 if ok else 1


def _export(args) -> int:
    from medclass.bundle_tools import export_torchscript

    out = export_torchscript(args.bundle, ckpt_file=args.ckpt, filepath=args.output)
    print(out)
    return 0


def _export_model(args) -> int:
    from medclass.exports import export_model

    options = json.loads(args.preset_options) if args.preset_options else None
    result = export_model(args.model, args.format, args.out, check_images=args.check, max_images=args.max_images,
                          task=args.task, preset=args.preset, preset_options=options)
    print(result.summary())
    return 0


def _large_files(args) -> int:
    from medclass.bundle_tools import write_large_files

    print(write_large_files(args.bundle, args.url, ts_url=args.ts_url))
    return 0


def _sync(args) -> int:
    from medclass.bundle_tools import sync_bundle

    bad = 0
    for bundle in args.bundles:
        stale = sync_bundle(bundle, check=args.check)
        verb = "out of date" if args.check else "updated"
        print(f"{bundle}: {verb}: {', '.join(stale)}" if stale else f"{bundle}: up to date")
        bad += bool(stale)
    return 1 if (args.check and bad) else 0


def _split(args) -> int:
    from medclass.workflow import prepare_data
    from medclass.data import split_report

    labels = args.labels.split(",") if args.labels else None
    data = prepare_data(args.datalist, dataset_dir=args.dataset_dir, label_names=labels, task=args.task,
                        seed=args.seed, resplit=args.resplit, check_files=not args.no_check_files,
                        split_file=args.split_file, split_out=args.out)
    print(json.dumps(split_report(data.splits, data.label_names), indent=2, default=float))
    if args.out:
        print(f"split written to {args.out}", file=sys.stderr)
    return 0


def _compare(args) -> int:
    from medclass.report.compare import compare_evaluations, format_table

    out = args.out if args.out is not None else args.eval_a / f"compare_{args.eval_b.name}"
    result = compare_evaluations(args.eval_a, args.eval_b, out, min_positives=args.min_positives)
    print(format_table(result))
    print(f"written: {out / 'compare.csv'}, {out / 'compare.png'}")
    return 0


def _phantoms(args) -> int:
    from medclass.data import ensure_phantoms

    print(ensure_phantoms(args.out_dir, n=args.n, size=args.size, seed=args.seed))
    return 0


def _report(args) -> int:
    from medclass.report import build_report

    metrics = build_report(args.folder, task=args.task, n_bootstrap=args.bootstrap, seed=args.seed,
                           n_bins=args.bins, saliency_max=args.saliency_max, html=not args.no_html,
                           min_positives=args.min_positives)
    ci = metrics["mean_auc_ci"]
    print(json.dumps({"report": str(args.folder / "report.html") if not args.no_html else None,
                      "n": metrics["n"], "mean_auc": metrics["mean_auc"], "mean_auc_ci": ci,
                      "mean_auc_labels": len(metrics["mean_auc_labels"]),
                      "mean_auc_excluded": sorted(metrics["mean_auc_excluded"]),
                      "micro_auc": metrics["micro_auc"], "ece": metrics["calibration"]["ece"],
                      "threshold_fallbacks": sorted(metrics["threshold_fallbacks"])}))
    return 0


def _model_card(args) -> int:
    from medclass.report.card import write_model_card

    for path in write_model_card(args.model, args.eval_dir, args.out):
        print(path)
    return 0


def _label_app(args) -> int:
    import shutil

    from medclass.label import app_dir

    src = app_dir()
    if args.copy_to is None:
        print(src)
        return 0
    dst = Path(args.copy_to).expanduser().resolve()
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / "main.py", dst / "main.py")
    print(dst)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "run":  # its --key value pairs are config overrides, not argparse options
        from medclass.run_cli import main as run_main

        return run_main(argv[1:])
    if argv and argv[0] == "tune":  # likewise: its other --key value pairs are the trials' fixed settings
        try:
            from medclass.tuning.cli import main as tune_main
        except ImportError as exc:
            print(f"medclass: error: medclass tune needs optuna ({exc}): pip install -c requirements/constraints.txt "
                  "-e \".[tune]\"", file=sys.stderr)
            return 2
        return tune_main(argv[1:])
    parser = argparse.ArgumentParser(prog="medclass", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("run", help="run a bundle workflow (train, evaluate, inference, saliency, multi_gpu_train) from the "
                               "bundle folder, --key value overrides as monai.bundle run; a mistake ends in one "
                               "short error (traceback in logs/medclass-error.log, or on screen with --debug)")

    sub.add_parser("tune", help="search a bundle's training recipe with Optuna over its configs/tune.yaml (trials pruned "
                                "on the validation AUC; workers sharing --storage join one study; --write-best); "
                                "medclass tune --help for its options")

    p = sub.add_parser("verify-bundle", help="property, metadata, large_files.yml, network I/O and export checks of a "
                                             "bundle (inference.yaml alone, as the Model Zoo checks it)")
    p.add_argument("bundle", type=Path)
    p.set_defaults(func=_verify)

    p = sub.add_parser("export-bundle", help="TorchScript export of a bundle's trained model in the Model Zoo's "
                                            "layout (metadata.json and inference.json inside; checked against "
                                            "PyTorch)")
    p.add_argument("bundle", type=Path)
    p.add_argument("--ckpt", type=Path, default=None, help="checkpoint (default: BUNDLE/models/model.pt)")
    p.add_argument("--output", type=Path, default=None, help="output file (default: BUNDLE/models/model.ts)")
    p.set_defaults(func=_export)

    p = sub.add_parser("export", help="export a model file to ONNX, torch.export (.pt2) or TorchScript, with its labels, "
                                      "thresholds and preprocessing inside, checked against PyTorch (max abs "
                                      "difference printed)")
    p.add_argument("model", type=Path, help="a medclass model file (e.g. bundles/cxr_classification/models/model.pt)")
    p.add_argument("--format", default="onnx", help="onnx (default) | pt2 | torchscript")
    p.add_argument("--out", type=Path, default=None, help="the file to write (default: MODEL with .onnx, .pt2 or .ts)")
    p.add_argument("--check", nargs="+", default=None, metavar="IMAGE",
                   help="images or folders to compare the exported model with PyTorch on, through the model's "
                        "preprocessing (default: random inputs of the model's shape)")
    p.add_argument("--max-images", type=int, default=4, help="at most this many check images (default 4)")
    p.add_argument("--task", default=None, choices=list(TASKS),
                   help="only for model files that do not record it (a contradicting value is an error)")
    p.add_argument("--preset", default=None, help="only for model files that do not record their preprocessing "
                                                  "preset (cxr, generic, ct, mr)")
    p.add_argument("--preset-options", default=None, help="JSON, e.g. '{\"percentiles\": [1, 99]}' (likewise)")
    p.set_defaults(func=_export_model)

    p = sub.add_parser("large-files", help="when a model is released: write the bundle's large_files.yml (the Model "
                                           "Zoo's download list) with the URL and SHA-256 of models/model.pt")
    p.add_argument("bundle", type=Path)
    p.add_argument("--url", required=True, help="where models/model.pt is published")
    p.add_argument("--ts-url", default=None, help="where models/model.ts is published (optional)")
    p.set_defaults(func=_large_files)

    p = sub.add_parser("sync-bundles", help="write the shared workflow configs (medclass/bundle_configs) and each "
                                            "bundle's values (its configs/common.yaml) into its configs/*.yaml")
    p.add_argument("bundles", nargs="+", type=Path)
    p.add_argument("--check", action="store_true", help="only report bundles whose configs are out of date")
    p.set_defaults(func=_sync)

    p = sub.add_parser("split", help="load a datalist, make patient-disjoint splits and print their report")
    p.add_argument("datalist")
    p.add_argument("--dataset-dir", default=None)
    p.add_argument("--labels", default=None, help="comma-separated label names")
    p.add_argument("--task", default=None, choices=list(TASKS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resplit", action="store_true", help="pool the given splits and re-split by patient")
    p.add_argument("--no-check-files", action="store_true", help="do not check that image files exist")
    p.add_argument("--out", type=Path, default=None,
                   help="write the split (id, image, patient_id, split) to this CSV, the file a run takes as "
                        "split_file (training writes the same to models/split.csv)")
    p.add_argument("--split-file", type=Path, default=None, help="take the splits from this split file")
    p.set_defaults(func=_split)

    p = sub.add_parser("phantoms", help="make the synthetic chest phantom set (images, masks, datalist.csv)")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--n", type=int, default=600)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_phantoms)

    p = sub.add_parser("report", help="rebuild metrics.json, per_label.csv, plots and report.html of an evaluation "
                                      "folder from its predictions.csv (with labels) and thresholds.json")
    p.add_argument("folder", type=Path)
    p.add_argument("--task", default=None, choices=list(TASKS),
                   help="default: the folder's earlier settings, else inferred from the labels")
    p.add_argument("--bootstrap", type=int, default=None, help="bootstrap resamples (default: as before, or 1000)")
    p.add_argument("--seed", type=int, default=None, help="bootstrap seed (default: as before, or 0)")
    p.add_argument("--bins", type=int, default=None, help="reliability-diagram bins (default: as before, or 10)")
    p.add_argument("--saliency-max", type=int, default=None, help="saliency images embedded (default 24)")
    p.add_argument("--no-html", action="store_true", help="only metrics.json and per_label.csv")
    p.add_argument("--min-positives", type=int, default=None,
                   help="test positives and negatives a label needs to enter the mean AUC (default: as before, or 10)")
    p.set_defaults(func=_report)

    p = sub.add_parser("compare", help="compare two evaluations of the same test images: per-label AUC "
                                       "differences (DeLong's paired test) and McNemar's test of the decisions")
    p.add_argument("eval_a", type=Path, help="evaluation folder of model A (predictions.csv, thresholds.json)")
    p.add_argument("eval_b", type=Path, help="evaluation folder of model B")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for compare.csv, compare.json, compare.png (default: EVAL_A/compare_<EVAL_B name>)")
    p.add_argument("--min-positives", type=int, default=10,
                   help="positives and negatives a label needs for its comparison to count as estimable")
    p.set_defaults(func=_compare)
    p = sub.add_parser("model-card", help="write model_card.md / .html / .json (TRIPOD+AI and CLAIM items) from a "
                                          "model file and, optionally, its evaluation folder (metrics.json, "
                                          "thresholds.json, data.json)")
    p.add_argument("model", type=Path, help="the model file (models/model.pt)")
    p.add_argument("eval_dir", type=Path, nargs="?", default=None, help="its evaluation folder (eval/)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: EVAL_DIR, else the model's)")
    p.set_defaults(func=_model_card)

    p = sub.add_parser("label-app", help="print the MONAI Label app folder (for monailabel start_server --app)")
    p.add_argument("copy_to", nargs="?", default=None,
                   help="write the app (its main.py) into this folder and print it; MONAI Label writes logs/ and "
                        "model/ into the app folder, so use this where the installed package is read-only")
    p.set_defaults(func=_label_app)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"medclass: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

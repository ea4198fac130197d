"""Tutorial 1: train, evaluate and run the chest X-ray bundle on your own ChestX-ray14-style data.

You have a folder of chest X-ray images and a label CSV in the official ChestX-ray14 format
(`Image Index`, `Finding Labels` separated by `|`, `Patient ID`). This tutorial takes you from there to a
trained model, its test metrics and predictions on new images (PNG or DICOM), using the bundle's configs and
command-line overrides only: no Python of your own.

We show it on the 1,000 NIH ChestX-ray14 images in the shared data (MEDCLASS_DATA, default ../shared/data):

    python tutorials/01_chest_xray_bundle.py            # about 10 minutes on 2 CPU cores
    python tutorials/01_chest_xray_bundle.py --tiny     # a 1-epoch smoke run (what the test suite does)

Every bundle command the tutorial runs is printed first, so you can copy it for your own data.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "bundles" / "cxr_classification"
sys.path.insert(0, str(ROOT))

from medclass import data_root  # noqa: E402
from medclass.data import CXR14_LABELS  # noqa: E402
from _bundle_cli import run_bundle  # noqa: E402  (tutorials/_bundle_cli.py)


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="one epoch, a narrow network: a smoke run")
    ap.add_argument("--workdir", type=Path, default=None, help="where your CSV, models and outputs go")
    args = ap.parse_args(argv)
    root = data_root(required=True)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="medclass-tutorial1-"))
    work.mkdir(parents=True, exist_ok=True)

    # ---------------------------------------------------------------------------------------------
    # Step 1. Your data: an image folder and a label CSV in the official ChestX-ray14 format.
    # Here we make both from the shared NIH images (a flat folder of PNGs, like the official release).
    images = work / "images"
    images.mkdir(exist_ok=True)
    rows = list(csv.DictReader(open(root / "cxr14" / "labels_nih1000.csv")))
    if args.tiny:
        rows = rows[::3]  # a third of the images keeps the smoke run short
    with open(work / "my_labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Image Index", "Finding Labels", "Patient ID", "Patient Age", "Patient Gender", "View Position"])
        for r in rows:
            link = images / r["image_index"]
            if not link.exists():
                link.symlink_to(root / "cxr14" / r["path"])
            w.writerow([r["image_index"], r["finding_labels"], r["patient_id"], r["age"], r["sex"], r["view"]])
    print(f"Step 1: {len(rows)} images in {images}, labels in {work / 'my_labels.csv'}")

    # ---------------------------------------------------------------------------------------------
    # Step 2. Check the data and the split before training. The CSV has no split column, so the bundle
    # makes a patient-disjoint split stratified by label prevalence (70/15/15, seeded) and reports it;
    # `medclass split` prints the same report without training.
    subprocess.run([sys.executable, "-m", "medclass.cli", "split", str(work / "my_labels.csv"),
                    "--dataset-dir", str(images)], check=True, stdout=subprocess.DEVNULL)

    # ---------------------------------------------------------------------------------------------
    # Step 3. Train. Overrides name the data, the 14 labels (their order is the model's output order and is
    # stored inside the model), and the input size. NIH1000 images are 64x64; for full-size ChestX-ray14 use
    # --image_size "[224,224]" --arch densenet121 --width null. Later workflows read these from models/model.pt.
    common = {
        "datalist": str(work / "my_labels.csv"),
        "dataset_dir": str(images),
        "label_names": list(CXR14_LABELS),
        "image_size": [64, 64],
        "ckpt_dir": str(work / "models"),
        "output_dir": str(work / "eval"),
    }
    if args.tiny:
        common.update({"width": 8})
    train = {**common, "log_dir": str(work / "runs"), "max_epochs": 1 if args.tiny else 20,
             "batch_size": 32, "progress_bar": False}
    run_bundle(BUNDLE, "train", train)

    # ---------------------------------------------------------------------------------------------
    # Step 4. Evaluate the best checkpoint. The validation split first chooses each finding's decision threshold
    # (Youden's J; or e.g. "sensitivity:0.9") where it has at least min_positives (10) positives and negatives,
    # else a flagged fallback (the validation-score quantile at the training prevalence), stored in
    # models/model.pt and models/thresholds.json so that inference decides with it; then the test split is
    # evaluated at those thresholds: eval/metrics.json and eval/per_label.csv (AUC with a DeLong 95% CI,
    # sensitivity, specificity, PPV and NPV with Wilson CIs, F1, ECE, Brier, calibration slope; a finding with
    # too few test positives is "not estimable", not 0.5 or a zero-width interval), eval/predictions.csv and
    # eval/report.html, with results by sex, view and age band (columns of your CSV). The headline mean AUC
    # averages only the findings with enough test cases and names the others.
    evaluate = {**common, "operating_point": "youden", "bootstrap_samples": 200 if args.tiny else 1000,
                "subgroups": ["Patient Gender", "View Position", {"column": "Patient Age", "bins": [0, 40, 60, 80]}]}
    run_bundle(BUNDLE, "evaluate", evaluate)
    metrics = json.loads((work / "eval" / "metrics.json").read_text())
    lo, hi = metrics["mean_auc_ci"]
    included, left_out = metrics["mean_auc_labels"], metrics["mean_auc_excluded"]
    if metrics["mean_auc"] is None:
        print(f"\nStep 4: {metrics['n']} test images; no finding has {metrics['min_positives']} positive and "
              "negative test cases, so there is no headline mean AUC")
    else:
        ci = f" [95% CI {lo:.3f}, {hi:.3f}]" if lo is not None else ""
        print(f"\nStep 4: test mean AUC {metrics['mean_auc']:.3f}{ci} over {len(included)} of "
              f"{len(metrics['per_label'])} findings ({', '.join(included)}), {metrics['n']} images")
    print(f"  left out of the mean: {', '.join(f'{n} ({r})' for n, r in left_out.items()) or 'none'}")
    for name in metrics["threshold_fallbacks"]:
        print(f"  {name}: threshold not chosen on validation (too few cases), fallback used")
    for name, m in metrics["per_label"].items():
        auc = "undefined" if m["auc"] is None else f"{m['auc']:.3f}" + ("" if m["estimable"] else "*")
        sens = "undefined" if m["sensitivity"] is None else f"{m['sensitivity']:.2f}"
        print(f"  {name:20s} AUC {auc:>9s}   sensitivity {sens:>9s} at {m['threshold']:.3f}   "
              f"positives {m['positives']}")
    for s in metrics["subgroups"]:
        auc = "undefined" if s["mean_auc"] is None else f"{s['mean_auc']:.3f}"
        print(f"  {s['column']} = {s['value']}: {s['n']} images, mean AUC {auc}")
    print("  report:", work / "eval" / "report.html")

    # ---------------------------------------------------------------------------------------------
    # Step 5. Predict on new images: a folder of PNGs, or DICOM files straight from a modality (VOI LUT,
    # MONOCHROME1 and JPEG 2000 are handled). Here: a real 1024x1024 ChestX-ray14 DICOM.
    dicom_dir = root / "dicom" / "chest_xray"
    infer = {**common, "input": str(dicom_dir), "output_dir": str(work / "predictions")}
    run_bundle(BUNDLE, "inference", infer)
    print("\nStep 5: predictions for", dicom_dir)
    print((work / "predictions" / "predictions.csv").read_text().splitlines()[0][:120], "...")
    print(f"\nEverything is in {work}")
    return work


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

"""Tutorial 2: your own 3D dataset (NIfTI files or DICOM series + a label CSV) to a trained, evaluated model.

You have a folder of MR or CT studies and a CSV of labels. The 3D bundle (`bundles/volume_classification`) runs
the same pipeline as the chest X-ray bundle; you point it at your data with a datalist and command-line
overrides only. We show it on the 10 IXI T1 brain MR volumes in the shared data (label: sex; 10 volumes is a
pipeline check, not a benchmark), then predict on a real 176-slice MR DICOM series.

    python tutorials/02_your_own_3d_dataset.py           # a few minutes on 2 CPU cores
    python tutorials/02_your_own_3d_dataset.py --tiny    # a 1-epoch smoke run (what the test suite does)

Every bundle command is printed first, so you can copy it for your own data.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "bundles" / "volume_classification"
sys.path.insert(0, str(ROOT))

from medclass import data_root  # noqa: E402
from _bundle_cli import run_bundle  # noqa: E402  (tutorials/_bundle_cli.py)


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="one epoch, a narrow network: a smoke run")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args(argv)
    root = data_root(required=True)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="medclass-tutorial2-"))
    work.mkdir(parents=True, exist_ok=True)

    # ---------------------------------------------------------------------------------------------
    # Step 1. A datalist: one row per study with the path (a NIfTI file, a DICOM series folder or a 3D DICOM
    # file), one 0/1 column per label (blank = unknown) and a patient id (splits are patient-disjoint).
    ixi = root / "nifti" / "IXI_T1_ds_n10"
    with open(ixi / "IXI_demog_n10.csv") as f, open(work / "ixi_labels.csv", "w", newline="") as out:
        w = csv.writer(out)
        w.writerow(["image", "patient_id", "sex_male"])
        for r in csv.DictReader(f):
            w.writerow([f"{r['MRID']}-T1_ds.nii.gz", r["MRID"], int(r["Sex"] == "M")])
    print(f"Step 1: datalist {work / 'ixi_labels.csv'} (images relative to {ixi})")

    # ---------------------------------------------------------------------------------------------
    # Step 2. Train. The overrides say: this datalist and its image folder; one label; the MR preset
    # (reorientation to RAS, per-volume percentile normalisation; --preset_options "{}" clears the CT window
    # the bundle ships with); the network input size in RAS order (IXI volumes are 120x120x90 at 2 mm); and,
    # for 10 studies, a 60/20/20 patient split.
    common = {
        "datalist": str(work / "ixi_labels.csv"),
        "dataset_dir": str(ixi),
        "label_names": ["sex_male"],
        "preset": "mr",
        "preset_options": {},
        "image_size": [64, 64, 48],
        "split_fractions": [0.6, 0.2, 0.2],
        "ckpt_dir": str(work / "models"),
        "output_dir": str(work / "eval"),
        "width": 8 if args.tiny else 16,
        "batch_size": 2,
    }
    run_bundle(BUNDLE, "train", {**common, "log_dir": str(work / "runs"), "max_epochs": 1 if args.tiny else 8,
                     "progress_bar": False})

    # ---------------------------------------------------------------------------------------------
    # Step 3. Evaluate on the test split: eval/metrics.json and eval/predictions.csv (with labels). With two
    # test studies of one sex the AUC is reported as undefined, not 0.5: that is a pipeline check, not a result.
    run_bundle(BUNDLE, "evaluate", common)
    metrics = json.loads((work / "eval" / "metrics.json").read_text())
    print(f"\nStep 3: {metrics['n']} test studies, per-label {metrics['per_label']}")

    # ---------------------------------------------------------------------------------------------
    # Step 4. Predict on a DICOM series: give the folder of slices. It is read as one study (slices sorted by
    # position, checked for gaps and duplicates), reoriented to RAS and resized like the training volumes.
    series = root / "dicom" / "mr_t1_mprage_series"
    run_bundle(BUNDLE, "inference", {**common, "input": str(series), "output_dir": str(work / "predictions")})
    print("\nStep 4:", (work / "predictions" / "predictions.csv").read_text())

    # What the network saw for that series: the preset's output shape and orientation.
    import nibabel as nib
    from monai.data.utils import affine_to_spacing

    from medclass.transforms import build_transforms, read_image

    raw, _ = read_image(str(series), spatial_dims=3)
    item = build_transforms("mr", 3, common["image_size"])({"image": str(series), "id": series.name})
    codes = "".join(nib.aff2axcodes(item["image"].affine.numpy()))
    print(f"series read as {tuple(raw.shape)}; network input {tuple(item['image'].shape)} in {codes} orientation, "
          f"spacing {affine_to_spacing(item['image'].affine).tolist()} mm")
    print(f"\nEverything is in {work}")
    return work


if __name__ == "__main__":
    main()

"""Tutorial 3: saliency maps ("why did the model say that?") for a 2D and a 3D model, and how far to trust them.

We train both bundles on their synthetic phantoms (images with planted findings whose masks we know), run the
`saliency` workflow a user runs on a split or a folder, then read the maps: where they peak, whether that is the
planted finding (the pointing game), and what the files are.

    python tutorials/03_saliency.py           # ~10 minutes on 2 CPU cores
    python tutorials/03_saliency.py --tiny    # a 1-epoch smoke run (what the test suite does)

How to read a map:
* values are in [0, 1] per map, 1 = the region that most raised the score of the named label; each map is
  scaled on its own, so compare *where* maps peak, not their absolute values across images;
* a map explains one label (file ``<id>_<label>``); by default the labels predicted positive at the model's
  stored thresholds, so a negative image gets no map unless ``--saliency_negatives true``;
* Grad-CAM is coarse (the resolution of the last CNN stage, upsampled): it says *which region*, not which pixel;
  gradients (vanilla, SmoothGrad) are sharp but noisy; occlusion is model-agnostic and slow;
* measured on the bundles' default models (benchmarks/RESULTS.md): in 2D 90-95% of Grad-CAM maps peak inside the
  planted finding (thin pneumothorax crescents included); in 3D Grad-CAM's 6^3 grid (cells 8 voxels apart) finds
  masses but cannot point at a 2-voxel calcification, while gradients can, so this tutorial draws 3D maps with
  SmoothGrad;
* maps are in the preprocessed image's space: 2D maps have the network input's shape; 3D NIfTI maps carry the
  preprocessed volume's affine, so a viewer overlays them on the original scan in world coordinates.
Faithfulness measured by benchmarks/saliency.py (figures in benchmarks/RESULTS.md): a saliency map is a
hypothesis about the model, to be checked, never a segmentation.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
BUNDLES = {2: ROOT / "bundles" / "cxr_classification", 3: ROOT / "bundles" / "volume_classification"}
sys.path.insert(0, str(ROOT))

from _bundle_cli import run_bundle  # noqa: E402  (tutorials/_bundle_cli.py)


def bundle(dims: int, workflow: str, overrides: dict) -> None:
    run_bundle(BUNDLES[dims], workflow, overrides, quiet=True)


def pointing(dims: int, common: dict, work: Path, n: int) -> dict:
    """Pointing game with the Python API: share of maps whose maximum lies inside the planted finding."""
    from monai.bundle import ConfigParser

    from medclass.bundle_tools import config_files
    from medclass.saliency import saliency_maps

    parser = ConfigParser()
    parser.read_config(config_files(BUNDLES[dims], "evaluate.yaml"))
    parser.update({**common, "bundle_root": str(BUNDLES[dims])})
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(Path(common["ckpt_dir"]) / "model.pt", weights_only=True))
    net.eval()
    pre = parser.get_parsed_content("preprocessing")
    data = parser.get_parsed_content("data")
    hits: dict[str, list[bool]] = {"gradcam": [], "vanilla": [], "smoothgrad": []}
    for it in data.splits["test"]:
        for k, name in enumerate(net.label_names):
            if it["label"][k] != 1 or not it.get(f"mask_{name}") or len(hits["gradcam"]) >= n:
                continue
            x = pre({"image": it["image"], "id": it["id"]})["image"][None]
            mask = pre({"image": it[f"mask_{name}"], "id": it["id"]})["image"][0].numpy()
            mask = mask > mask.min() + 0.5 * (mask.max() - mask.min())
            for method in hits:
                heat = saliency_maps(net, x, targets=[name], method=method)[0, 0].numpy()  # (H, W[, D]) in [0, 1]
                hits[method].append(bool(mask[np.unravel_index(heat.argmax(), heat.shape)]))
    return {m: (round(float(np.mean(h)), 2), len(h)) for m, h in hits.items()}


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="one epoch, small phantoms, a narrow network: a smoke run")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="medclass-tutorial3-"))
    work.mkdir(parents=True, exist_ok=True)

    for dims in (2, 3):
        d = work / f"{dims}d"
        if args.tiny:
            size, extra = (48 if dims == 2 else 32), {"width": 8, "max_epochs": 1}
            n_ph = 40
        else:
            size, extra = (64 if dims == 2 else 32), {"max_epochs": 6}
            n_ph = 600 if dims == 2 else 200
        phantoms = {"n": n_ph, "size": size, "seed": 0, **({"spatial_dims": 3} if dims == 3 else {})}
        common = {"dataset_dir": str(d / "phantoms"), "ckpt_dir": str(d / "models"), "image_size": [size] * dims,
                  "phantoms": phantoms, **({"width": 8} if args.tiny else {})}
        # -----------------------------------------------------------------------------------------------------
        # Step 1. Train the bundle on its phantoms (every finding has a mask: we know where the evidence is).
        print(f"\n=== {dims}D: train on phantoms ({size}{'^3' if dims == 3 else ' px'}) ===")
        bundle(dims, "train", {**common, **extra, "output_dir": str(d / "eval"), "log_dir": str(d / "runs"),
                               "progress_bar": False})

        # Step 2. The saliency workflow: maps for every label predicted positive, on the test split (or any
        # image/folder/datalist with --input). Files go to <output_dir>/saliency/, TensorBoard images to
        # <log_dir>/saliency. evaluate.yaml does the same alongside its metrics with --saliency true.
        # Grad-CAM in 2D; SmoothGrad in 3D, where the default model's Grad-CAM does not localise (see above).
        method = "gradcam" if dims == 2 else "smoothgrad"
        bundle(dims, "saliency", {**common, "output_dir": str(d / "sal"), "log_dir": str(d / "runs"),
                                  "saliency_method": method, "saliency_negatives": True,
                                  "saliency_max_images": 6})
        out = d / "sal" / "saliency"
        rows = list(csv.DictReader(open(out / "index.csv")))
        print(f"{len(rows)} maps in {out}:")
        for r in rows[:4]:
            print(f"  {r['id']:<16} {r['label']:<14} p={float(r['probability']):.2f}  {r['map']}  {r['png']}")
        if dims == 3 and rows:
            import nibabel as nib

            # Step 3 (3D). The NIfTI map opens aligned with the input: same affine (the phantoms are already at
            # image_size; with resampling, the affine is the resampled grid's, still aligned in world space).
            first = rows[0]
            src = next(p for p in (d / "phantoms" / "images").glob(f"{first['id']}*"))
            m, s = nib.load(str(out / first["map"])), nib.load(str(src))
            print(f"map {m.shape} vs image {s.shape}; same affine: {np.allclose(m.affine, s.affine, atol=1e-4)}")

        # Step 4. Read the maps with the Python API and check them against the planted findings.
        res = pointing(dims, common, work, n=8 if args.tiny else 40)
        print(f"pointing game {dims}D (share of maps peaking inside the finding, n): {res}")

    print("\nFaithfulness on the full benchmark (benchmarks/saliency.py; see benchmarks/RESULTS.md): pointing game on "
          "phantoms and deletion test on PneumoniaMNIST / AdrenalMNIST3D per method, with costs.")
    return work


if __name__ == "__main__":
    main()

"""Cost of the training augmentation alone: per item (MONAI dictionary transforms) against per batch (BatchAugment).

    python benchmarks/augment.py                  # 32 x 1 x 64 x 64 (2D, cxr preset) and 8 x 1 x 64^3 (3D, generic)
    python benchmarks/augment.py --repeats 50 --threads 1
    python benchmarks/augment.py --quick          # tiny sizes: checks that it runs (used by the tests)

For each shape, the bundle's default recipe (``augment: {}``) of the preset the speed benchmark trains with:
  ``sample``:      what the data loader does per batch with ``augment_on: sample``: for every item, CacheDataset's
                   copy of the cached item, then the pipeline from its first random transform on (RandFlipd,
                   RandAffined, RandAdjustContrastd, ..., NormalizeIntensityd, EnsureTyped);
  ``sample_tail``: the same without the copy (the transforms alone);
  ``batch``:       ``BatchAugment`` on the collated, normalised batch (``augment_on: batch``; the item pipeline is
                   then cached to its end, so nothing else runs per item);
  ``batch_all``:   ``BatchAugment`` with every step applied to every sample (probabilities 1): its worst case.
Collation, the same in both modes, is left out. Seconds per batch are medians over ``--repeats`` batches after
warm-up; the device is CUDA when available (``--device`` to choose), the per-item path always runs on the CPU, as
in the data loader. The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from timing import median_seconds  # noqa: E402

CASES = {2: ("cxr", 32, 64), 3: ("generic", 8, 64)}  # spatial_dims: (preset, batch size, image size)


def _items(dims: int, n: int, size: int, preset: str) -> tuple[list[dict], object]:
    """``n`` items through the deterministic part of the training pipeline (what CacheDataset keeps)."""
    from monai.transforms import Compose

    from medclass.transforms import build_transforms, first_random_index

    rng = np.random.default_rng(0)
    grids = np.meshgrid(*[np.linspace(0, 1, size)] * dims, indexing="ij")
    base = sum((k + 1) * g for k, g in enumerate(grids))
    train = build_transforms(preset, dims, [size] * dims, train=True, augment={}, augment_on="sample")
    start = first_random_index(train)
    head = Compose(train.transforms[:start])
    tail = Compose(train.transforms[start:])
    items = []
    for i in range(n):
        img = ((base + 0.3 * rng.random(base.shape)) * 60).astype(np.uint8)
        items.append(head({"image": img, "label": np.array([i % 2], np.float32), "id": f"case-{i}"}))
    return items, tail


def run_case(dims: int, batch: int, size: int, preset: str, repeats: int, device: torch.device) -> dict:
    from medclass.transforms import BatchAugment, build_transforms

    items, tail = _items(dims, batch, size, preset)
    tail.set_random_state(seed=0)

    def per_item(copy_cache: bool):
        def run():
            for it in items:
                tail(copy.deepcopy(it) if copy_cache else dict(it))
        return run

    # the normalised batch the trainer receives with augment_on: batch (the whole pipeline cached)
    det = build_transforms(preset, dims, [size] * dims, train=True, augment={}, augment_on="batch")
    x = torch.stack([det({"image": (it["image"].as_tensor().numpy()[0] * 255).astype(np.uint8)})["image"].as_tensor()
                     for it in items]).to(device)
    aug = BatchAugment(dims, {}, preset=preset, seed=0)
    worst = BatchAugment(dims, {"prob": 1.0, "flip_prob": 1.0}, preset=preset, seed=0)

    def batched(a):
        def run():
            a(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
        return run

    out = {
        "shape": [batch, 1, *([size] * dims)], "preset": preset, "device": str(device),
        "sample_s": median_seconds(per_item(True), repeats),
        "sample_tail_s": median_seconds(per_item(False), repeats),
        "batch_s": median_seconds(batched(aug), repeats),
        "batch_all_s": median_seconds(batched(worst), repeats),
    }
    out["sample_over_batch"] = out["sample_s"] / out["batch_s"]
    return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in out.items()}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dims", type=int, nargs="+", default=[2, 3], choices=[2, 3])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--device", default=None, help="device of the batched path (default: cuda if available)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes and few repeats")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    result = {"torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    for dims in args.dims:
        preset, batch, size = CASES[dims]
        if args.quick:
            batch, size = 4, 16
        res = run_case(dims, batch, size, preset, 3 if args.quick else args.repeats, device)
        print(f"{dims}D {res['shape']} {preset}: per item {res['sample_s'] * 1e3:.1f} ms/batch "
              f"({res['sample_tail_s'] * 1e3:.1f} without the cache copy), batched on {device} "
              f"{res['batch_s'] * 1e3:.1f} ms/batch ({res['batch_all_s'] * 1e3:.1f} with every step on every "
              f"sample): {res['sample_over_batch']:.1f}x")
        result[f"{dims}d"] = res
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

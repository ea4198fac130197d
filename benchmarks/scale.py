"""Data larger than memory: what each cache costs and how fast training reads from it, at growing data sizes.

    python benchmarks/scale.py                                  # 2k / 8k / 32k images at 224 px, and 3D
    python benchmarks/scale.py --sizes 2000 8000 --steps 30     # smaller
    python benchmarks/scale.py --quick                          # 64 images, 3 steps: checks that it runs

For every data size (synthetic 256 px grey PNGs with smooth structure and noise, written once into
``--workdir``) and every cache setting, one fresh process (so its peak memory is its own):

* builds the chest X-ray bundle's training dataset at 224 px (``medclass.workflow.cached_dataset``, the
  ``cxr`` preset, ``augment_on: batch``) with the cache setting: ``memory_float32`` (the cache as it was before
  packing: the same-run baseline), ``memory`` (packed uint8), ``disk`` (packed, in the work folder) or ``auto``
  (memory within ``--memory-budget``, else disk: resolved as the bundle resolves it);
* measures the resident memory the filled cache adds per item (RSS after the fill minus before, over the items)
  and the fill time;
* trains ``--steps`` steps of the bundle's network (ResNet-18 at width 32, bf16 autocast, AdamW, batch 32,
  the bundle's data loader with ``num_workers``) and reports images/s and the share of the time spent waiting
  for batches.

3D (``--sizes-3d``): the volume bundle's ``generic`` preset at 64^3 with the same settings (float16 packing).
Prints a JSON line per run, then a table, the projection of each cache's memory to 112,120 images (ChestX-ray14)
and the goals (packed memory per 224 px image at most 0.07 MB; ``auto`` within its budget at every size; the
disk cache at least 80% of the memory cache's images/s), and writes ``scale.png`` (memory and images/s against
size) in the work folder. The last line is one JSON object with everything.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODES = ("memory_float32", "memory", "disk", "auto")
CHESTXRAY14 = 112_120
MB = 2**20


def make_images(folder: Path, n: int, dims: int, size: int) -> list[dict]:
    """``n`` synthetic images (PNG in 2D, NIfTI in 3D) in ``folder``, made once; their datalist items."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        path = folder / (f"{i:06d}.png" if dims == 2 else f"{i:05d}.nii.gz")
        if not path.exists():
            coarse = rng.random((8,) * dims)
            zoom = size // 8
            smooth = np.kron(coarse, np.ones((zoom,) * dims))
            img = (160 * smooth + 40 * rng.random((size,) * dims)).astype(np.uint8)
            if dims == 2:
                from PIL import Image

                Image.fromarray(img).save(path)
            else:
                import nibabel as nib

                nib.save(nib.Nifti1Image(img, np.eye(4)), str(path))
        items.append({"image": str(path), "label": np.array([i % 2, (i // 2) % 2, 0, 1], np.float32), "id": str(i)})
    return items


def rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def run_one(args: argparse.Namespace) -> dict:
    """One (size, mode) measurement in this process (called in a subprocess by :func:`main`)."""
    import torch

    from medclass.data.cache import resolve_cache
    from medclass.engines import autocast_context
    from medclass.networks import build_classifier
    from medclass.transforms import build_transforms
    from medclass.workflow import cached_dataset, data_loader

    dims, size = args.dims, (224 if args.dims == 2 else 64)
    items = make_images(Path(args.images), args.n, dims, 256 if dims == 2 else 64)
    preset = "cxr" if dims == 2 else "generic"
    transform = build_transforms(preset, dims, [size] * dims, train=True, augment={}, augment_on="batch")
    cache_dir = Path(args.workdir) / f"cache_{dims}d_{args.n}_{args.mode}"
    mode, dtype = args.mode, "auto"
    if mode == "memory_float32":
        mode, dtype = "memory", "float32"
    budget = f"{args.memory_budget}MB"
    if mode == "auto":
        mode = resolve_cache("auto", items, transform, cache_dir=cache_dir, memory_budget=budget, spatial_dims=dims)
    torch.set_num_threads(os.cpu_count() or 1)
    gc.collect()
    before = rss()
    t0 = time.perf_counter()
    ds = cached_dataset(items, transform, cache=mode, cache_dir=cache_dir, cache_dtype=dtype, spatial_dims=dims)
    if mode == "disk":  # fill the disk cache up front, as an epoch would
        for i in range(len(ds)):
            ds[i]
    fill_s = time.perf_counter() - t0
    gc.collect()
    cached_mb = (rss() - before) / MB
    net = build_classifier("resnet18", dims, 1, 4, image_size=[size] * dims, width=32)
    opt = torch.optim.AdamW(net.parameters(), 1e-3, fused=True)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    loader = data_loader(ds, batch_size=args.batch, shuffle=True, num_workers=args.num_workers, drop_last=True)
    wait = step = 0.0
    images = 0
    it = iter(loader)
    for k in range(args.steps + 2):  # two warm-up steps
        t_a = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        t_b = time.perf_counter()
        x = batch["image"].as_tensor() if hasattr(batch["image"], "as_tensor") else batch["image"]
        with autocast_context("bf16", "cpu"):
            loss = loss_fn(net(x).float(), batch["label"].float())
        opt.zero_grad()
        loss.backward()
        opt.step()
        t_c = time.perf_counter()
        if k >= 2:
            wait += t_b - t_a
            step += t_c - t_a
            images += x.shape[0]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB -> MB
    return {"dims": dims, "n": args.n, "cache": args.mode, "resolved": mode if args.mode == "auto" else None,
            "cache_dtype": "float32" if args.mode == "memory_float32" else ("uint8" if dims == 2 else "float16"),
            "fill_s": round(fill_s, 1), "cache_mb": round(cached_mb, 1),
            "mb_per_item": round(cached_mb / args.n, 4) if mode == "memory" else None,
            "peak_rss_mb": round(peak, 1), "images_per_s": round(images / step, 2),
            "data_wait_share": round(wait / step, 3), "memory_budget_mb": args.memory_budget if args.mode == "auto"
            else None}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=None, help="2D data sizes (default 2000 8000 32000; none: no 2D)")
    ap.add_argument("--sizes-3d", type=int, nargs="*", default=None, help="3D data sizes (default 200 800; none: no 3D)")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--steps", type=int, default=40, help="timed training steps per run")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--num-workers", type=int, default=0, help="the bundle's default: 0")
    ap.add_argument("--memory-budget", type=int, default=1024, help="MB for cache: auto")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="64 images (16 in 3D), 3 steps of 8")
    ap.add_argument("--one", nargs=4, metavar=("DIMS", "N", "MODE", "IMAGES"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.batch, args.memory_budget = 3, 8, 1
    default_2d, default_3d = ([64], [16]) if args.quick else ([2000, 8000, 32000], [200, 800])
    args.sizes = default_2d if args.sizes is None else args.sizes
    args.sizes_3d = default_3d if args.sizes_3d is None else args.sizes_3d
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="medclass-scale-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    args.workdir = work
    if args.one:  # a child run
        args.dims, args.n, args.mode, args.images = int(args.one[0]), int(args.one[1]), args.one[2], args.one[3]
        print(json.dumps(run_one(args)), flush=True)
        return {}

    runs = []
    for dims, sizes in ((2, args.sizes), (3, args.sizes_3d)):
        for n in sizes:
            images = work / f"images_{dims}d"
            make_images(images, n, dims, 256 if dims == 2 else 64)
            for mode in args.modes:
                cmd = [sys.executable, __file__, "--one", str(dims), str(n), mode, str(images), "--workdir", str(work),
                       "--steps", str(args.steps), "--batch", str(args.batch), "--num-workers", str(args.num_workers),
                       "--memory-budget", str(args.memory_budget)]
                res = subprocess.run(cmd, capture_output=True, text=True)
                if res.returncode != 0:
                    raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
                run = json.loads(res.stdout.strip().splitlines()[-1])
                print(json.dumps(run), flush=True)
                runs.append(run)
    out = {"runs": runs, **summarise(runs, args.memory_budget)}
    plot(runs, work / "scale.png")
    out["plot"] = str(work / "scale.png")
    print(table(runs))
    print(json.dumps(out), flush=True)
    return out


def summarise(runs: list[dict], budget_mb: int) -> dict:
    """Projections to ChestX-ray14 and the goals."""
    out: dict = {"projection_112k_gb": {}, "goals": {}}
    for mode in ("memory_float32", "memory"):
        per = [r["mb_per_item"] for r in runs if r["dims"] == 2 and r["cache"] == mode and r["mb_per_item"]]
        if per:
            out["projection_112k_gb"][mode] = round(float(np.median(per)) * CHESTXRAY14 / 1024, 2)
    packed = [r["mb_per_item"] for r in runs if r["dims"] == 2 and r["cache"] == "memory" and r["mb_per_item"]]
    if packed:
        out["goals"]["mb_per_224px_item"] = {"value": max(packed), "goal": 0.07, "met": max(packed) <= 0.07}
    autos = [r for r in runs if r["cache"] == "auto"]
    if autos:
        within = all(r["cache_mb"] <= budget_mb for r in autos)
        out["goals"]["auto_within_budget"] = {"max_cache_mb": max(r["cache_mb"] for r in autos),
                                              "budget_mb": budget_mb, "met": within}
    ratios = []
    for r in runs:
        if r["cache"] == "disk":
            mem = next((m for m in runs if m["cache"] == "memory" and m["dims"] == r["dims"] and m["n"] == r["n"]),
                       None)
            if mem:
                ratios.append(round(r["images_per_s"] / mem["images_per_s"], 3))
    if ratios:
        out["goals"]["disk_over_memory_images_per_s"] = {"values": ratios, "goal": 0.8, "met": min(ratios) >= 0.8}
    return out


def table(runs: list[dict]) -> str:
    lines = ["| dims | images | cache | resolved | MB/item | cache MB | peak RSS MB | fill s | images/s | data wait |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['dims']}D | {r['n']} | {r['cache']} | {r['resolved'] or ''} | "
                     f"{r['mb_per_item'] if r['mb_per_item'] is not None else ''} | {r['cache_mb']} | "
                     f"{r['peak_rss_mb']} | {r['fill_s']} | {r['images_per_s']} | {r['data_wait_share']:.0%} |")
    return "\n".join(lines)


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for mode in MODES:
        rs = sorted((r for r in runs if r["dims"] == 2 and r["cache"] == mode), key=lambda r: r["n"])
        if rs:
            a.plot([r["n"] for r in rs], [r["peak_rss_mb"] for r in rs], "o-", label=mode)
            b.plot([r["n"] for r in rs], [r["images_per_s"] for r in rs], "o-", label=mode)
    for ax, title in ((a, "peak resident memory (MB)"), (b, "training images/s")):
        ax.set_xscale("log")
        ax.set_xlabel("images (224 px)")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()

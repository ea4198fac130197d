"""Training and inference speed: the medclass bundle against the bare network and a plain MONAI loop, in one run.

    python benchmarks/speed.py                    # 2D (PneumoniaMNIST at 64 px) and 3D (AdrenalMNIST3D at 64^3)
    python benchmarks/speed.py --dims 2           # one of them
    python benchmarks/speed.py --quick            # tiny sizes: checks that every phase runs (used by the tests)

Measured on the same data, network (DenseNet121 with MONAI's standard stem, ``--arch`` / ``--stem`` to change)
and batch size, each phase in its own process (so its peak memory is its own):
  (a) ``bare``:   the network's training step alone (forward, loss, backward, the bundle's optimizer step) on
                  tensors already in memory, with the bundle's speed settings (precision, channels-last, threads):
                  the ceiling;
  (b) ``bundle``: the medclass bundle's train workflow end to end (datalist, cached preprocessing, augmentation,
                  data loader, engine, handlers), images/s over the training iterations of its second epoch;
  (c) ``plain``:  a MONAI-tutorial-style loop: fp32, ``DenseNet121(spatial_dims, in_channels, out_channels)``
                  with default arguments, the tutorial's transforms (scale intensity, random rotate/flip/zoom;
                  3D: random 90-degree rotations) on an uncached ``monai.data.Dataset``, Adam, a plain for loop;
plus ``latency``: one real chest X-ray DICOM from file to probabilities through the bundle's inference
preprocessing and a DenseNet121 at 224 px (median of repeated runs; with Grad-CAM when ``medclass.saliency``
is installed), and ``peak``: bf16 and fp32 matrix-multiply GFLOP/s measured now. The achieved training FLOP/s
of (b) is 3x the forward FLOPs (counted by ``torch.utils.flop_counter``) times its images/s.

``--epoch-table`` instead prints the time guidance of the README: training seconds per 1,000 images (one epoch of
1,000 images) for each architecture and image size of ``--table`` (default: ResNet-18 and DenseNet-121 at 128 and
224 px in 2D, ViT-S at 224; ResNet-18 at 48^3 and 64^3, DenseNet-121 at 48^3 in 3D; CNNs at the bundles' width 32),
from a few timed training steps of the bundle's network, optimizer and speed settings (phase a), extrapolated: the
mean over the steps and the fastest step (closest to an unshared machine); use ``--stem auto`` for the bundles'
default stem.

``--auc-epochs N`` also trains the bundle for N epochs with the speed settings on and with them off (fp32, no
channels-last, per-item augmentation) on the full training split and reports both test AUCs: the speed must not
cost AUC.

The last line printed is one JSON object with every figure and the ratios ``b_over_a`` and ``b_over_c``
(goals on CPU: >= 0.9 and >= 2.0). Data comes from MEDCLASS_DATA (default ../shared/data).
"""

from __future__ import annotations

import argparse
import json
import logging
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
sys.path.insert(0, str(ROOT / "benchmarks"))
BUNDLES = {2: ROOT / "bundles" / "cxr_classification", 3: ROOT / "bundles" / "volume_classification"}
SETS = {2: ("pneumoniamnist.npz", 64), 3: ("adrenalmnist3d_64.npz", 64)}

from timing import median_seconds  # noqa: E402

logger = logging.getLogger("speed")


# ----------------------------------------------------------------------------------------------------- helpers
def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _subset_npz(dims: int, n_train: int, n_val: int, out: Path, size: int | None = None) -> Path:
    """A MedMNIST-format npz with the first ``n_train`` / ``n_val`` / ``n_val`` images of each split."""
    from medclass import data_root

    name, _ = SETS[dims]
    src = np.load(data_root(required=True) / "medmnist" / name)
    arrays = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_val)):
        images, labels = src[f"{split}_images"], src[f"{split}_labels"]
        n = min(n, len(images)) if n > 0 else len(images)
        img = images[:n]
        if size is not None and img.shape[1] > size:  # --quick: a smaller array, same code path
            step = img.shape[1] // size
            img = img[(slice(None),) + (slice(None, None, step),) * dims][(slice(None),) + (slice(0, size),) * dims]
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = img, labels[:n]
    np.savez(out, **arrays)
    return out


def _overrides(args, dims: int, npz: Path, work: Path) -> dict:
    size = [args.size[dims]] * dims
    return {
        "datalist": str(npz), "label_names": ["label"], "task": "multilabel", "image_size": size,
        "arch": args.arch, "width": None, "stem": args.stem, "batch_size": args.batch[dims],
        "bundle_root": str(BUNDLES[dims]), "ckpt_dir": str(work / "models"), "output_dir": str(work / "eval"),
        "log_dir": str(work / "runs"), "resume": False, "progress_bar": False, "num_workers": 0,
        "max_epochs": 2, "early_stop_patience": 0, "seed": 0,
        **({"preset": "generic", "preset_options": {}} if dims == 3 else {}),
        **{k: _json_or_str(v) for k, v in args.set},
    }


def _json_or_str(value: str):
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _parse_bundle(dims: int, overrides: dict, kind: str = "train"):
    from monai.bundle import ConfigWorkflow

    from medclass.bundle_tools import config_files

    bundle = BUNDLES[dims]
    return ConfigWorkflow(config_file=config_files(bundle, f"{kind}.yaml"),
                          meta_file=str(bundle / "configs" / "metadata.json"),
                          logging_file=str(bundle / "configs" / "logging.conf"),
                          workflow_type="train" if kind == "train" else "inference", **overrides)


def _train_flops_per_image(net, shape) -> float:
    """3 x forward FLOPs (forward + backward) for one input of ``shape`` (C, *spatial)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    net = net.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros((1, *shape)))
    return 3.0 * counter.get_total_flops()


# ------------------------------------------------------------------------------------------------------ phases
def phase_peak(args) -> dict:
    """bf16 and fp32 matrix-multiply throughput (GFLOP/s) on this machine, now."""
    import torch

    n = 512 if args.quick else 2048
    out = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        for _ in range(3):
            a @ b
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < (0.5 if args.quick else 3.0):
            a @ b
            reps += 1
        out[f"{name}_matmul_gflops"] = round(2 * n**3 * reps / (time.perf_counter() - t0) / 1e9, 1)
    return out


def phase_bare(args, dims: int, npz: Path, work: Path) -> dict:
    """(a) the bundle's network, optimizer and speed settings, training steps on in-memory tensors."""
    import torch

    from medclass.engines import _channels_last_format, autocast_context, resolve_precision
    from medclass.vocab import flag

    wf = _parse_bundle(dims, _overrides(args, dims, npz, work))
    parser = wf.parser
    net = parser.get_parsed_content("network")
    precision = resolve_precision(parser.get_parsed_content("precision"), "cpu")
    channels_last = flag(parser.get_parsed_content("channels_last"))
    threads = parser.get_parsed_content("num_threads")
    if threads:
        torch.set_num_threads(int(threads))
    batch = args.batch[dims]
    shape = (1, *[args.size[dims]] * dims)
    flops = _train_flops_per_image(net, shape)
    net.train()
    fmt = _channels_last_format(net)
    if channels_last:
        net = net.to(memory_format=fmt)
    opt = parser.get_parsed_content("optimizer")  # the bundle's optimizer (fused AdamW), on the same parameters
    loss_fn = torch.nn.BCEWithLogitsLoss()
    x = torch.randn(batch, *shape)
    if channels_last:
        x = x.contiguous(memory_format=fmt)
    y = torch.randint(0, 2, (batch, 1)).float()

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast_context(precision, "cpu"):
            pred = net(x)
        loss = loss_fn(pred.float(), y)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    n_steps = args.steps[dims]
    times = []
    for _ in range(n_steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    seconds = sum(times)
    # the fastest step: what the machine gives when nothing else runs (on a shared machine the mean is slower)
    return {"images_per_s": round(batch * n_steps / seconds, 2), "images_per_s_best_step": round(batch / min(times), 2),
            "precision": precision, "channels_last": channels_last, "train_gflop_per_image": round(flops / 1e9, 3)}


def phase_bundle(args, dims: int, npz: Path, work: Path, evaluate: bool = False, **extra) -> dict:
    """(b) the bundle's train workflow; images/s over the training iterations of epoch 2 (epoch 1 warms up)."""
    from ignite.engine import Events

    overrides = {**_overrides(args, dims, npz, work), **extra}
    wf = _parse_bundle(dims, overrides)
    t_init = time.perf_counter()
    wf.initialize()
    parser = wf.parser
    trainer = parser.get_parsed_content("train#trainer")
    dataset = parser.get_parsed_content("train#dataset")
    cache_seconds = time.perf_counter() - t_init
    marks: dict[int, list[float]] = {}
    counts: dict[int, int] = {}

    def _start(engine):
        marks[engine.state.epoch] = [time.perf_counter()]
        counts[engine.state.epoch] = 0

    def _iter(engine):
        marks[engine.state.epoch].append(time.perf_counter())
        counts[engine.state.epoch] += len(engine.state.output["label"])

    trainer.add_event_handler(Events.EPOCH_STARTED, _start)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, _iter)
    t0 = time.perf_counter()
    wf.run()
    total = time.perf_counter() - t0
    last = max(marks)
    seconds = marks[last][-1] - marks[last][0]
    out = {"images_per_s": round(counts[last] / seconds, 2), "epoch_train_seconds": round(seconds, 1),
           "train_images": len(dataset), "setup_seconds_incl_cache": round(cache_seconds, 1),
           "run_seconds_incl_validation": round(total, 1), "precision": trainer.precision,
           "channels_last": trainer.channels_last, "nonfinite_steps": trainer.nonfinite_steps}
    if evaluate:
        wf_eval = _parse_bundle(dims, {k: v for k, v in overrides.items()
                                       if k not in ("max_epochs", "resume", "early_stop_patience", "progress_bar")},
                                kind="evaluate")
        wf_eval.initialize()
        wf_eval.run()
        metrics = json.loads((work / "eval" / "metrics.json").read_text())
        out["test_auc"] = round(metrics["mean_auc"], 4) if metrics["mean_auc"] is not None else None
    return out


def phase_plain(args, dims: int, npz: Path, work: Path) -> dict:
    """(c) a MONAI-tutorial-style loop: fp32, default DenseNet121 arguments, tutorial transforms, no cache."""
    import torch
    from monai.data import DataLoader, Dataset
    from monai.networks.nets import DenseNet121
    from monai.transforms import (Compose, EnsureChannelFirst, RandFlip, RandRotate, RandRotate90, RandZoom, Resize,
                                  ScaleIntensity)

    data = np.load(npz)
    images, labels = data["train_images"], data["train_labels"].astype(np.float32)
    size = [args.size[dims]] * dims
    if dims == 2:  # MONAI's MedNIST tutorial transforms (+ resize to the benchmark size)
        tf = Compose([EnsureChannelFirst(channel_dim="no_channel"), ScaleIntensity(), Resize(size),
                      RandRotate(range_x=np.pi / 12, prob=0.5, keep_size=True), RandFlip(spatial_axis=0, prob=0.5),
                      RandZoom(min_zoom=0.9, max_zoom=1.1, prob=0.5)])
    else:  # MONAI's 3D classification (densenet_training_dict) tutorial transforms
        tf = Compose([EnsureChannelFirst(channel_dim="no_channel"), ScaleIntensity(), Resize(size),
                      RandRotate90(prob=0.8, spatial_axes=(0, 2))])
    ds = Dataset([{"image": img.astype(np.float32), "label": lab} for img, lab in zip(images, labels)],
                 transform=lambda item: (tf(item["image"]), item["label"]))
    loader = DataLoader(ds, batch_size=args.batch[dims], shuffle=True, num_workers=0)
    model = DenseNet121(spatial_dims=dims, in_channels=1, out_channels=1)
    if args.arch != "densenet121":
        raise ValueError("the plain MONAI loop baseline is DenseNet121 only")
    opt = torch.optim.Adam(model.parameters(), 1e-5)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    rates = []
    for _epoch in range(2):  # epoch 1 warms up, epoch 2 is timed (as for the bundle)
        model.train()
        n, t0 = 0, time.perf_counter()
        for x, y in loader:
            opt.zero_grad()
            loss = loss_fn(model(torch.as_tensor(x)), torch.as_tensor(y))
            loss.backward()
            opt.step()
            n += len(x)
        rates.append(n / (time.perf_counter() - t0))
    return {"images_per_s": round(rates[-1], 2), "precision": "fp32"}


def phase_latency(args) -> dict:
    """One chest X-ray DICOM from file to probabilities (and with Grad-CAM) through the bundle's preprocessing."""
    import torch

    from medclass import data_root

    folder = data_root(required=True) / "dicom" / "chest_xray"
    dcm = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in (".dcm", ""))[0]
    size = 64 if args.quick else 224
    overrides = {"image_size": [size, size], "arch": "densenet121", "width": None, "label_names": ["finding"],
                 "bundle_root": str(BUNDLES[2]), "dataset_dir": str(folder)}
    parser = _parse_bundle(2, overrides, kind="inference").parser
    preprocessing = parser.get_parsed_content("preprocessing")
    net = parser.get_parsed_content("network_def").eval()
    from medclass.engines import autocast_context, resolve_precision

    precision = resolve_precision(parser.get_parsed_content("precision"), "cpu")

    def predict():
        item = preprocessing({"image": str(dcm), "id": "study"})
        with torch.no_grad(), autocast_context(precision, "cpu"):
            return torch.sigmoid(net(item["image"].as_tensor()[None]).float())

    def forward_only(x):
        with torch.no_grad(), autocast_context(precision, "cpu"):
            return net(x)

    reps = 3 if args.quick else 15
    x = preprocessing({"image": str(dcm), "id": "study"})["image"].as_tensor()[None]
    out = {"file": dcm.name, "image_size": size, "arch": "densenet121", "precision": precision,
           "file_to_probs_ms": round(1000 * median_seconds(predict, reps), 1),
           "forward_ms": round(1000 * median_seconds(lambda: forward_only(x), reps), 1)}
    try:
        from medclass.saliency import explain
    except ImportError:
        out["gradcam_ms"] = None
        out["gradcam_note"] = "medclass.saliency not available"
    else:
        def with_cam():
            item = preprocessing({"image": str(dcm), "id": "study"})  # one pass: probabilities and the map
            logits, maps = explain(net, item["image"].as_tensor()[None], method="gradcam", precision=precision)
            return torch.sigmoid(logits), maps

        out["file_to_probs_and_gradcam_ms"] = round(1000 * median_seconds(with_cam, reps), 1)
    return out


#: (arch, spatial_dims, image side) rows of ``--epoch-table``
EPOCH_TABLE = [("resnet18", 2, 128), ("resnet18", 2, 224), ("densenet121", 2, 128), ("densenet121", 2, 224),
               ("vit_small", 2, 224), ("resnet18", 3, 48), ("resnet18", 3, 64), ("densenet121", 3, 48)]
#: the bundles' default CNN width (``width`` in configs/common.yaml), kept by ``--epoch-table``
BUNDLE_WIDTH = 32


def phase_epoch(args, dims: int, npz: Path, work: Path, arch: str = "densenet121", size: int = 64,
                steps: int = 3) -> dict:
    """One row of ``--epoch-table``: phase (a) for ``arch`` at ``size`` with ``steps`` timed steps."""
    args.arch, args.size[dims], args.steps[dims] = arch, int(size), int(steps)
    width = None if arch.startswith("vit") else BUNDLE_WIDTH
    args.set = [*args.set, ("width", json.dumps(width))]
    out = phase_bare(args, dims, npz, work)
    out.update(arch=arch, width=width, spatial_dims=dims, image_size=[int(size)] * dims, batch_size=args.batch[dims],
               timed_steps=int(steps), seconds_per_1000_images=round(1000.0 / out["images_per_s"], 1),
               seconds_per_1000_images_best_step=round(1000.0 / out["images_per_s_best_step"], 1))
    return out


def epoch_table(args, child: list[str], work: Path) -> dict:
    """Training seconds per 1,000 images for each row of ``args.table`` (each row in its own process)."""
    import torch

    rows = []
    npz = {d: _subset_npz(d, 16, 8, work / f"table_{d}d.npz") for d in sorted({r[1] for r in args.table})}
    t0 = time.perf_counter()
    for arch, dims, size in args.table:
        rows.append(_run_phase("epoch", child, dims, {"npz": str(npz[dims]), "arch": arch, "size": size,
                                                      "steps": args.table_steps}))
        logger.info("%s %dD %d: %.1f s per 1,000 images (%.1f at the fastest step)", arch, dims, size,
                    rows[-1]["seconds_per_1000_images"], rows[-1]["seconds_per_1000_images_best_step"])
    load = os.getloadavg()
    return {"machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}", "stem": args.stem,
            "load_average_1_5_15": [round(v, 2) for v in load], "wall_s": round(time.perf_counter() - t0, 1),
            "rows": rows}


# -------------------------------------------------------------------------------------------------------- main
def _run_phase(name: str, argv: list[str], dims: int | None = None, extra: dict | None = None) -> dict:
    cmd = [sys.executable, __file__, *argv, "--phase", name]
    if dims is not None:
        cmd += ["--phase-dims", str(dims)]
    if extra:
        cmd += ["--phase-extra", json.dumps(extra)]
    logger.info("phase %s%s ...", name, f" {dims}D" if dims else "")
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"phase {name} failed:\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dims", type=int, nargs="+", default=[2, 3], choices=[2, 3])
    ap.add_argument("--arch", default="densenet121")
    ap.add_argument("--stem", default="standard",
                    help="bundle network stem: standard (default) is MONAI's DenseNet121 stem, the same FLOPs as the "
                         "plain loop's network; auto is the bundle default (less downsampling at 64 px: 4x (2D) / "
                         "8x (3D) the FLOPs, for accuracy on small images)")
    ap.add_argument("--train-items", type=int, nargs=2, default=[1024, 96], metavar=("N2D", "N3D"),
                    help="training images per dimensionality for the timed phases (0: all)")
    ap.add_argument("--auc-epochs", type=int, default=0,
                    help="also train the bundle N epochs on the full data with speed settings on and off; AUCs")
    ap.add_argument("--set", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                    help="bundle override for the bare and bundle phases (VALUE as JSON), e.g. --set loader thread")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, to check that every phase runs")
    ap.add_argument("--repeats", type=int, default=1,
                    help="run phases a, b, c this many times, interleaved, and report each one's median images/s "
                         "(this machine's throughput drifts by 10-20%% between minutes)")
    ap.add_argument("--epoch-table", action="store_true",
                    help="only the README's time guidance: training seconds per 1,000 images by architecture and "
                         "image size (--table), from a few timed steps each")
    ap.add_argument("--table", type=json.loads, default=EPOCH_TABLE,
                    help='rows of --epoch-table as JSON, e.g. \'[["resnet18", 2, 128]]\'')
    ap.add_argument("--table-steps", type=int, default=3, help="timed training steps per row of --epoch-table")
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    ap.add_argument("--phase-dims", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--phase-extra", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    raw_argv = list(argv if argv is not None else sys.argv[1:])
    args.size = {2: 32 if args.quick else SETS[2][1], 3: 32 if args.quick else SETS[3][1]}
    args.batch = {2: 32, 3: 8}
    args.steps = {2: 3 if args.quick else 20, 3: 2 if args.quick else 6}
    n_train = {2: 64 if args.quick else args.train_items[0], 3: 16 if args.quick else args.train_items[1]}
    work = args.workdir or Path(tempfile.mkdtemp(prefix="medclass-speed-"))
    work.mkdir(parents=True, exist_ok=True)

    if args.phase:  # a child process: one phase, one JSON line
        logging.basicConfig(level=logging.WARNING)
        dims = args.phase_dims
        extra = json.loads(args.phase_extra)
        if args.phase == "peak":
            out = phase_peak(args)
        elif args.phase == "latency":
            out = phase_latency(args)
        elif args.phase == "epoch":
            npz = Path(extra.pop("npz"))
            out = phase_epoch(args, dims, npz, work / f"epoch_{dims}d", **extra)
        else:
            npz = Path(extra.pop("npz"))
            sub = work / f"{args.phase}_{dims}d_{extra.get('tag', 'run')}"
            extra.pop("tag", None)
            fn = {"bare": phase_bare, "bundle": phase_bundle, "plain": phase_plain}[args.phase]
            out = fn(args, dims, npz, sub, **extra)
        out["peak_rss_mb"] = round(_peak_rss_mb(), 1)
        print(json.dumps(out))
        return out

    logging.basicConfig(level=logging.INFO)
    import torch

    child = [a for a in raw_argv]
    child += ["--workdir", str(work)] if "--workdir" not in raw_argv else []
    result: dict = {"machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}", "arch": args.arch,
                    "stem": args.stem, "bundle_overrides": dict(args.set),
                    "threads": torch.get_num_threads(), "quick": args.quick}
    if args.epoch_table:
        table = epoch_table(args, child, work)
        print(json.dumps(table))
        return table
    result["peak"] = _run_phase("peak", child)
    peak_bf16 = result["peak"]["bf16_matmul_gflops"] * 1e9
    for dims in args.dims:
        npz = _subset_npz(dims, n_train[dims], 8 if args.quick else 64, work / f"subset_{dims}d.npz",
                          size=args.size[dims] if args.quick else None)
        r: dict = {"image_size": args.size[dims], "batch_size": args.batch[dims], "train_images": n_train[dims],
                   "data": SETS[dims][0]}
        runs: dict[str, list[dict]] = {"a_bare": [], "b_bundle": [], "c_plain_monai": []}
        for _ in range(max(1, args.repeats)):
            for key, phase in (("a_bare", "bare"), ("b_bundle", "bundle"), ("c_plain_monai", "plain")):
                runs[key].append(_run_phase(phase, child, dims, {"npz": str(npz)}))
        for key, outs in runs.items():
            outs = sorted(outs, key=lambda o: o["images_per_s"])
            r[key] = {**outs[len(outs) // 2], "all_images_per_s": [o["images_per_s"] for o in runs[key]]}
        a, b, c = (r[k]["images_per_s"] for k in ("a_bare", "b_bundle", "c_plain_monai"))
        r["b_over_a"] = round(b / a, 3)
        r["b_over_c"] = round(b / c, 3)
        achieved = r["a_bare"]["train_gflop_per_image"] * 1e9 * b
        r["train_gflops_achieved"] = round(achieved / 1e9, 1)
        r["fraction_of_bf16_matmul_peak"] = round(achieved / peak_bf16, 3)
        if args.auc_epochs:
            full = _subset_npz(dims, 0, 0, work / f"full_{dims}d.npz")
            for tag, extra in (("speed_on", {}), ("speed_off", {"precision": "fp32", "channels_last": False,
                                                                          "augment_on": "sample"})):
                r[f"auc_{tag}"] = _run_phase("bundle", child, dims, {"npz": str(full), "tag": tag, "evaluate": True,
                                                                     "max_epochs": args.auc_epochs, **extra})
        result[f"{dims}d"] = r
    result["latency"] = _run_phase("latency", child)
    for dims in args.dims:
        result[f"b_over_a_{dims}d"] = result[f"{dims}d"]["b_over_a"]
        result[f"b_over_c_{dims}d"] = result[f"{dims}d"]["b_over_c"]
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

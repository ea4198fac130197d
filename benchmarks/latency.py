"""Latency of one chest X-ray DICOM to probabilities (and to probabilities plus Grad-CAM) on every path a user calls.

    python benchmarks/latency.py                  # ResNet-18 and DenseNet-121 at 224 px, 50 warm runs per path
    python benchmarks/latency.py --arch densenet121 --runs 30
    python benchmarks/latency.py --quick          # 64 px, 3 runs: checks that every path runs (used by the tests)

One real DICOM (the 1024x1024 ChestX-ray14 DX in ``MEDCLASS_DATA/dicom/chest_xray``), a copy of the chest X-ray
bundle with ``image_size`` 224, the architecture's standard width and stem and a randomly initialised model
(seed 0: latency does not depend on the weights) and its ONNX export (``medclass export``). Paths, each timed in
this one process after warm-up:

- ``engine``: what ``benchmarks/speed.py`` times: the bundle's inference preprocessing, the network at the bundle's
  precision (``auto``: bf16 on CPU) and the sigmoid; with Grad-CAM, :func:`medclass.saliency.explain` at that
  precision instead (one forward pass gives the probabilities and the top label's map). The baseline of every
  ratio.
- ``app``: the MONAI Label app's predict (:meth:`medclass.label.bundle.BundleModel.predict`, in-process as
  ``tests/label`` call it): the decisions at the stored thresholds, and with Grad-CAM the PNG map on the input
  image's grid written to a folder.
- ``workflow``: a warm ``inference`` workflow (``--input`` a folder of copies of the DICOM, batch size 1), per
  image: the time between two completed iterations of its evaluator (reading, preprocessing, network,
  post-processing, predictions.csv); with Grad-CAM the ``saliency`` workflow over the same folder (one Grad-CAM map
  per image, its PNG overlay, .npy and TensorBoard image).
- ``onnxruntime``: the same preprocessing, the ONNX export on ONNX Runtime (fp32) and the sigmoid (no Grad-CAM:
  ONNX Runtime computes no gradients); ``workflow-onnxruntime``: the inference workflow with ``backend:
  onnxruntime``; ``engine-fp32``: the engine at fp32, ONNX Runtime's precision.

Printed: the load average of the machine at the start and end (other jobs on the same cores inflate every figure),
a table of p50 / p95 (ms) per architecture and path, with each path's p50 over the engine's p50 measured
in the same run, and last one JSON object with every figure. The issue's goals: every path within 1.5x of the
engine; DenseNet-121 to probabilities and Grad-CAM under 120 ms p50 on the app path; ONNX Runtime at least as
fast as PyTorch.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from timing import call_times  # noqa: E402

BUNDLE = "cxr_classification"
DICOM = "dicom/chest_xray/NIH_CXR14_1.3.6.1.4.1.11129.5.5.110503645592756492463169821050252582267888.dcm"
ARCHS = ("resnet18", "densenet121")

logger = logging.getLogger("latency")


def percentiles(times: list[float]) -> dict[str, float]:
    """p50 / p95 in ms of durations in seconds."""
    arr = np.asarray(times) * 1000.0
    return {"p50_ms": round(float(np.percentile(arr, 50)), 1), "p95_ms": round(float(np.percentile(arr, 95)), 1),
            "n": len(times)}


def time_calls(fn, runs: int, warmup: int) -> dict[str, float]:
    return percentiles(call_times(fn, runs, warmup))


def make_bundle(work: Path, arch: str, size: int) -> Path:
    """A bundle copy for ``arch`` at ``size`` px with a random model.pt (seed 0) and its ONNX export."""
    import torch
    import yaml
    from monai.bundle import ConfigWorkflow

    from medclass.bundle_tools import config_files, sync_bundle
    from medclass.exports import export_model

    dst = work / f"{BUNDLE}_{arch}"
    shutil.copytree(ROOT / "bundles" / BUNDLE / "configs", dst / "configs")
    common = dst / "configs" / "common.yaml"
    values = yaml.safe_load(common.read_text())
    values.update({"image_size": [size, size], "arch": arch, "width": None, "stem": "auto", "batch_size": 1,
                   "saliency_method": "gradcam"})
    common.write_text(yaml.safe_dump(values, sort_keys=False))
    sync_bundle(dst)
    torch.manual_seed(0)
    wf = ConfigWorkflow(config_file=config_files(dst), workflow_type="inference", bundle_root=str(dst),
                        input=str(work), logging_file=False)
    (dst / "models").mkdir()
    torch.save(wf.parser.get_parsed_content("network_def").state_dict(), dst / "models" / "model.pt")
    result = export_model(dst / "models" / "model.pt", "onnx", dst / "models" / "model.onnx", preset="cxr",
                          task="multilabel")
    logger.info("%s: %s", arch, result.summary())
    return dst


def engine_paths(bundle: Path, dcm: Path, runs: int, warmup: int) -> dict[str, dict]:
    """The engine alone (bundle precision and fp32, with and without Grad-CAM) and ONNX Runtime."""
    import torch
    from monai.bundle import ConfigWorkflow

    from medclass.bundle_tools import config_files
    from medclass.engines import autocast_context, resolve_precision
    from medclass.runtime import OnnxModel
    from medclass.saliency import explain

    parser = ConfigWorkflow(config_file=config_files(bundle), workflow_type="inference", bundle_root=str(bundle),
                            input=str(dcm), logging_file=False).parser
    preprocessing = parser.get_parsed_content("preprocessing")
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    net.eval()
    bundle_precision = resolve_precision(parser.get_parsed_content("precision"), "cpu")
    ort = OnnxModel(bundle / "models" / "model.onnx")

    def image() -> torch.Tensor:
        return preprocessing({"image": str(dcm), "id": "study"})["image"].as_tensor()[None]

    def probs(precision: str):
        def run():
            x = image()
            with torch.no_grad(), autocast_context(precision, "cpu"):
                p = torch.sigmoid(net(x).float())
            return x, p
        return run

    def with_cam(precision: str):
        def run():  # one pass gives the probabilities and the top label's map
            logits, maps = explain(net, image(), method="gradcam", precision=precision)
            return torch.sigmoid(logits), maps
        return run

    def onnx_probs():
        return torch.sigmoid(ort(image()))

    out = {}
    for name, precision in (("engine", bundle_precision), ("engine-fp32", "fp32")):
        out[name] = {"precision": precision, "probs": time_calls(probs(precision), runs, warmup),
                     "probs_gradcam": time_calls(with_cam(precision), runs, warmup)}
    out["onnxruntime"] = {"precision": "fp32", "probs": time_calls(onnx_probs, runs, warmup), "probs_gradcam": None}
    return out


def app_path(bundle: Path, dcm: Path, work: Path, runs: int, warmup: int) -> dict:
    """The MONAI Label app's predict, in-process."""
    from medclass.label.bundle import BundleModel

    model = BundleModel(bundle)
    sal = work / "app_saliency"
    return {"precision": "bundle", "probs": time_calls(lambda: model.predict(dcm), runs, warmup),
            "probs_gradcam": time_calls(lambda: model.predict(dcm, saliency=True, out_dir=sal), runs, warmup)}


def _workflow_per_image(bundle: Path, folder: Path, kind: str, warmup: int, work: Path, **overrides) -> dict:
    """Per-image time of a warm workflow over ``folder``: intervals between completed iterations (batch size 1)."""
    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow

    from medclass.bundle_tools import config_files

    out = work / f"out_{kind}_{overrides.get('backend', 'torch')}"
    wf = ConfigWorkflow(config_file=config_files(bundle, f"{kind}.yaml"), workflow_type="inference",
                        bundle_root=str(bundle), input=str(folder), output_dir=str(out), log_dir=str(out / "runs"),
                        batch_size=1, logging_file=False, **overrides)
    wf.initialize()
    evaluator = wf.parser.get_parsed_content("evaluator")
    stamps: list[float] = []
    evaluator.add_event_handler(Events.STARTED, lambda _: stamps.append(time.perf_counter()))
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda _: stamps.append(time.perf_counter()))
    wf.run()
    wf.finalize()
    return percentiles(list(np.diff(stamps)[warmup:]))


def workflow_paths(bundle: Path, dcm: Path, work: Path, runs: int, warmup: int) -> dict[str, dict]:
    folder = work / "folder"
    if not folder.exists():
        folder.mkdir()
        for i in range(runs + warmup):
            (folder / f"image_{i:03d}.dcm").symlink_to(dcm)
    sal = {"saliency_max_targets": 1, "saliency_negatives": True, "saliency_method": "gradcam"}
    return {
        "workflow": {"precision": "bundle",
                     "probs": _workflow_per_image(bundle, folder, "inference", warmup, work),
                     "probs_gradcam": _workflow_per_image(bundle, folder, "saliency", warmup, work, **sal)},
        "workflow-onnxruntime": {"precision": "fp32", "probs": _workflow_per_image(
            bundle, folder, "inference", warmup, work, backend="onnxruntime"), "probs_gradcam": None},
    }


ORDER = ("engine", "app", "workflow", "onnxruntime", "workflow-onnxruntime", "engine-fp32")


def table(results: dict[str, dict]) -> str:
    head = (f"{'arch':<12} {'path':<21} {'precision':<9} {'probs p50':>9} {'p95':>7} {'x engine':>8}   "
            f"{'+Grad-CAM p50':>13} {'p95':>7} {'x engine':>8}")
    lines = [head, "-" * len(head)]
    for arch, paths in results.items():
        base = paths["engine"]
        for name in ORDER:
            row = paths[name]
            cells = []
            for key in ("probs", "probs_gradcam"):
                r = row[key]
                if r is None:
                    cells.append(f"{'n/a':>9} {'':>7} {'':>8}" if key == "probs" else f"{'n/a':>13} {'':>7} {'':>8}")
                    continue
                ratio = r["p50_ms"] / base[key]["p50_ms"]
                row.setdefault("ratio", {})[key] = round(ratio, 2)
                width = 9 if key == "probs" else 13
                cells.append(f"{r['p50_ms']:>{width}.1f} {r['p95_ms']:>7.1f} {ratio:>7.2f}x")
            lines.append(f"{arch:<12} {name:<21} {row['precision']:<9} {cells[0]}   {cells[1]}")
    return "\n".join(lines)


def goals(results: dict[str, dict]) -> dict:
    """The issue's goals, checked on this run's figures."""
    worst = max((r["ratio"][k], f"{a} {n} {k}") for a, paths in results.items() for n, r in paths.items()
                if n not in ("engine", "engine-fp32") for k in r.get("ratio", {}))
    out = {"worst_ratio": worst[0], "worst_path": worst[1], "every_path_within_1.5x": worst[0] <= 1.5}
    if "densenet121" in results:
        p50 = results["densenet121"]["app"]["probs_gradcam"]["p50_ms"]
        out["densenet121_app_probs_gradcam_p50_ms"] = p50
        out["densenet121_app_under_120ms"] = p50 < 120
    out["onnxruntime_vs_torch_p50"] = {
        a: {"vs_engine": round(p["onnxruntime"]["probs"]["p50_ms"] / p["engine"]["probs"]["p50_ms"], 2),
            "vs_engine_fp32": round(p["onnxruntime"]["probs"]["p50_ms"] / p["engine-fp32"]["probs"]["p50_ms"], 2)}
        for a, p in results.items()}
    return out


def main(argv=None) -> dict:
    import torch

    from medclass import data_root

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", nargs="+", default=list(ARCHS), choices=ARCHS)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--runs", type=int, default=50, help="timed runs per path (default 50)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed runs first (default 5)")
    ap.add_argument("--quick", action="store_true", help="64 px, 3 runs, 1 warm-up: every path runs")
    ap.add_argument("--workdir", type=Path, default=None, help="where the bundle copies go (default: a temp folder)")
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.runs, args.warmup = 64, 3, 1
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    dcm = data_root(required=True) / DICOM
    if not dcm.is_file():
        raise SystemExit(f"{dcm}: the chest X-ray DICOM is missing (set MEDCLASS_DATA)")
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="medclass_latency_")
        args.workdir = Path(tmp.name)
    args.workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    load_start = [round(v, 2) for v in os.getloadavg()]  # other jobs on the cores inflate every figure: recorded
    try:
        for arch in args.arch:
            work = args.workdir / arch
            work.mkdir(exist_ok=True)
            bundle = make_bundle(work, arch, args.size)
            paths = engine_paths(bundle, dcm, args.runs, args.warmup)
            paths["app"] = app_path(bundle, dcm, work, args.runs, args.warmup)
            paths.update(workflow_paths(bundle, dcm, work, args.runs, args.warmup))
            results[arch] = paths
            logger.info("%s done", arch)
    finally:
        if tmp is not None:
            tmp.cleanup()
    print(table(results))
    load_end = [round(v, 2) for v in os.getloadavg()]
    print(f"load average (1, 5, 15 min) at start {load_start}, at end {load_end} on {os.cpu_count()} CPUs")
    out = {"loadavg_start": load_start, "loadavg_end": load_end, "cpus": os.cpu_count(),
           "image_size": args.size, "runs": args.runs, "warmup": args.warmup, "threads": torch.get_num_threads(),
           "torch": torch.__version__, "dicom": Path(DICOM).name[:40], "results": results, "goals": goals(results)}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()

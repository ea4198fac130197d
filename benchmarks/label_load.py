"""Load on the MONAI Label server: bursts of /infer calls and, meanwhile, /info calls, against a real server.

    python benchmarks/label_load.py                           # this tree: 200 /infer calls, 16 at a time
    python benchmarks/label_load.py --baseline-ref 17d2330    # and, in the same run, the server of that commit
    python benchmarks/label_load.py --quick                   # 12 calls, 4 at a time (used by the tests)

What it does, for each server measured (this tree, and with ``--baseline-ref`` the tree of a git commit, taken
with ``git archive`` into a temporary folder and put first on the server's PYTHONPATH):

1. a copy of the chest X-ray bundle's configs with a model file (a freshly built network with the bundle's
   default settings, seed 0: the figures measure serving, not the model) and a studies folder of real chest
   X-rays from ``MEDCLASS_DATA`` (three DICOMs: 1024x1024 DX, 440x440 CR, 1955x1841 JPEG 2000 CR; and PNGs of
   the NIH1000 set);
2. ``monailabel start_server`` on 127.0.0.1 (:func:`medclass.label.launch.start_server`), four warm-up calls;
3. ``--n`` ``POST /infer/cxr_classification?image=<id>&output=json`` calls from ``--concurrency`` client threads,
   cycling over the datastore images, while one more thread calls ``GET /info/`` every ``--info-interval``
   seconds until the burst ends.

It prints one JSON line per server and, last, one JSON object with all of them: throughput (completed /infer
calls per second of the burst), p50 / p95 / p99 latency of /infer and /info in ms, the answers by HTTP status,
and with a baseline the throughput ratio. A 503 (the server's queue is full) counts as an error here, although
it is the intended answer to an overload; the README's goal is no failed request at this load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BUNDLE = "cxr_classification"
DICOMS = ["dicom/chest_xray/NIH_CXR14_1.3.6.1.4.1.11129.5.5.110503645592756492463169821050252582267888.dcm",
          "dicom/chest_xray/CR-MONO1-10-chest.dcm", "dicom/chest_xray/RG1_J2KI.dcm"]


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50 / p95 / p99 of latencies in seconds, as milliseconds (None without values)."""
    if not values:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    arr = np.asarray(values) * 1000.0
    return {f"p{q}_ms": round(float(np.percentile(arr, q)), 1) for q in (50, 95, 99)}


def prepare(work: Path, data: Path, n_png: int) -> tuple[Path, Path, list[str]]:
    """The bundle copy with a model file and the studies folder; returns (bundle, studies, image ids)."""
    import torch

    from medclass.label.bundle import BundleModel

    bundle = work / BUNDLE
    if bundle.exists():
        shutil.rmtree(bundle)
    shutil.copytree(ROOT / "bundles" / BUNDLE / "configs", bundle / "configs")
    model = BundleModel(bundle)
    torch.manual_seed(0)
    wf = model._workflow(model.inference_files, "inference", input=str(work))
    (bundle / "models").mkdir()
    torch.save(wf.parser.get_parsed_content("network_def").state_dict(), bundle / "models" / "model.pt")
    studies = work / "studies"
    if studies.exists():
        shutil.rmtree(studies)
    studies.mkdir()
    ids = []
    for i, rel in enumerate(DICOMS):
        src = data / rel
        if not src.is_file():
            raise SystemExit(f"{src}: missing (set MEDCLASS_DATA to the shared data folder)")
        shutil.copy(src, studies / f"cxr_{i}.dcm")
        ids.append(f"cxr_{i}")
    pngs = sorted((data / "cxr14" / "NIH1000" / "test").rglob("*.png"))[:n_png]
    for i, src in enumerate(pngs):
        shutil.copy(src, studies / f"nih_{i}.png")
        ids.append(f"nih_{i}")
    return bundle, studies, ids


def source_tree(ref: str, dst: Path) -> Path:
    """The files of git commit ``ref`` of this repository in ``dst`` (``git archive``)."""
    dst.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dst)], input=archive, check=True)
    return dst


def measure(name: str, source: Path, bundle: Path, studies: Path, ids: list[str], work: Path, n: int,
            concurrency: int, info_interval: float) -> dict:
    """Start a server from ``source`` (a medclass tree), run the burst, stop it; returns the figures."""
    import requests

    from medclass.label.launch import start_server, stop_server, wait_until_ready

    app = work / f"app_{name}"
    shutil.rmtree(app, ignore_errors=True)
    shutil.copytree(source / "medclass" / "label" / "app", app)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(source), os.environ.get("PYTHONPATH", "")])}
    log = work / f"server_{name}.log"
    proc, url = start_server(app, studies, [bundle], log_file=log, env=env)
    try:
        wait_until_ready(url, proc, timeout=300, log_file=str(log))

        def infer(i: int) -> tuple[int, float]:
            t0 = time.perf_counter()
            try:
                r = requests.post(f"{url}/infer/{BUNDLE}", params={"image": ids[i % len(ids)], "output": "json"},
                                  data={"params": "{}"}, timeout=600)
                status = r.status_code
            except requests.RequestException:
                status = -1  # connection refused / reset / timed out
            return status, time.perf_counter() - t0

        for i in range(4):  # warm-up: model load, first DICOM decodes
            infer(i)
        done = threading.Event()
        info_lat: list[float] = []
        info_status: Counter = Counter()

        def poll_info() -> None:
            while not done.is_set():
                t0 = time.perf_counter()
                try:
                    status = requests.get(f"{url}/info/", timeout=600).status_code
                except requests.RequestException:
                    status = -1
                info_lat.append(time.perf_counter() - t0)
                info_status[status] += 1
                done.wait(info_interval)

        poller = threading.Thread(target=poll_info, daemon=True)
        t0 = time.perf_counter()
        poller.start()
        with ThreadPoolExecutor(concurrency) as pool:
            results = list(pool.map(infer, range(n)))
        wall = time.perf_counter() - t0
        done.set()
        poller.join()
    finally:
        stop_server(proc)
    statuses = Counter(s for s, _ in results)
    ok = [lat for s, lat in results if s == 200]
    return {
        "server": name,
        "requests": n,
        "concurrency": concurrency,
        "burst_s": round(wall, 2),
        "throughput_rps": round(len(ok) / wall, 2),
        "infer": percentiles(ok),
        "infer_status": {str(k): v for k, v in sorted(statuses.items())},
        "info": {**percentiles(info_lat), "calls": len(info_lat)},
        "info_status": {str(k): v for k, v in sorted(info_status.items())},
        "failed": n - statuses.get(200, 0) + sum(v for k, v in info_status.items() if k != 200),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="/infer calls in the burst")
    ap.add_argument("--concurrency", type=int, default=16, help="client threads sending them")
    ap.add_argument("--info-interval", type=float, default=0.1, help="seconds between /info calls")
    ap.add_argument("--baseline-ref", default=None, help="also measure the server of this git commit")
    ap.add_argument("--pngs", type=int, default=13, help="NIH1000 PNGs in the datastore beside the 3 DICOMs")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="12 calls, 4 at a time, 3 PNGs: checks that it runs")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.concurrency, args.pngs = 12, 4, 3
    from medclass import data_root

    work = (args.workdir or Path(tempfile.mkdtemp(prefix="medclass-label-load-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    bundle, studies, ids = prepare(work, data_root(), args.pngs)
    servers = [("current", ROOT)]
    if args.baseline_ref:
        servers.insert(0, (f"baseline_{args.baseline_ref}", source_tree(args.baseline_ref, work / "baseline_src")))
    out: dict = {"images": len(ids), "servers": []}
    for name, source in servers:
        res = measure(name, source, bundle, studies, ids, work, args.n, args.concurrency, args.info_interval)
        print(json.dumps(res), flush=True)
        out["servers"].append(res)
    if args.baseline_ref:
        base, cur = out["servers"]
        out["throughput_ratio"] = round(cur["throughput_rps"] / max(base["throughput_rps"], 1e-9), 2)
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()

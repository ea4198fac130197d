"""Tutorial 4: serve a medclass bundle from a MONAI Label server, call it over HTTP, retrain it, connect a viewer.

MONAI Label is the server 3D Slicer and OHIF talk to. `medclass.label` is a MONAI Label app that serves any
medclass bundle as a classification model: each label's probability and its 0/1 decision at the thresholds
stored in the model, and on request the saliency map of the top label as an image. Labels a clinician enters
for whole images go into the server's datastore, and a train request retrains the bundle on them.

    bash scripts/install_label.sh                   # once: MONAI Label 0.8.5 next to medclass (see README)
    python tutorials/04_monai_label.py              # a few minutes on 2 CPU cores
    python tutorials/04_monai_label.py --tiny       # a 1-epoch smoke run (what the test suite does)
    python tutorials/04_monai_label.py --keep-running   # leave the server up to connect 3D Slicer / OHIF

Steps: (1) train a copy of the chest X-ray bundle on its offline phantom set, (2) put real chest X-ray DICOMs
(and phantom images) into a studies folder, (3) start `monailabel start_server` on it, (4) ask it for
predictions and a saliency map over HTTP, (5) enter image-level labels and retrain through the server,
(6) run the model as 3D Slicer does (MONAI Label's own client) and connect a viewer. Every command is printed first.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "bundles" / "cxr_classification"
sys.path.insert(0, str(ROOT))

from _bundle_cli import run_bundle  # noqa: E402  (tutorials/_bundle_cli.py)
from medclass import data_root  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="1 epoch at 64 px: a smoke run")
    ap.add_argument("--workdir", type=Path, default=None, help="where the bundle copy, studies and outputs go")
    ap.add_argument("--port", type=int, default=0, help="server port (0: a free one)")
    ap.add_argument("--keep-running", action="store_true", help="keep the server up until Ctrl+C")
    args = ap.parse_args()

    try:
        import requests
    except ImportError:
        print("MONAI Label is not installed: run  bash scripts/install_label.sh  first", file=sys.stderr)
        return 2
    from medclass.cli import main as medclass_cli
    from medclass.label.launch import (free_port, server_command, start_server, stop_server, wait_for_training,
                                       wait_until_ready)

    work = (args.workdir or Path(tempfile.mkdtemp(prefix="medclass-label-tutorial-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f"working in {work}")

    # 1. a bundle with a trained model: a copy of the chest X-ray bundle, trained on its phantom set
    bundle = work / "cxr_classification"
    if not bundle.exists():
        shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("models", "data", "eval", "runs"))
    size = 64 if args.tiny else 128
    recipe = {"max_epochs": 1 if args.tiny else 3, "image_size": [size, size], "progress_bar": "false",
              "phantoms": {"n": 60 if args.tiny else 600, "size": size, "seed": 0}}
    if args.tiny:
        recipe.update({"width": 8, "batch_size": 8})
    # the server runs the bundle with its own values: write the recipe into its common.yaml and copy it into the
    # workflow configs (`medclass sync-bundles`; a run stops until common.yaml and the configs agree)
    common = bundle / "configs" / "common.yaml"
    import yaml

    values = yaml.safe_load(common.read_text())
    values.update({k: v for k, v in recipe.items() if k != "progress_bar"})
    common.write_text(yaml.safe_dump(values, sort_keys=False))
    sync = [sys.executable, "-m", "medclass.cli", "sync-bundles", str(bundle)]
    print("\n$ medclass sync-bundles " + str(bundle), flush=True)
    subprocess.run(sync, check=True, stdout=subprocess.DEVNULL)
    if not (bundle / "models" / "model.pt").exists():
        run_bundle(bundle, "train", {"progress_bar": "false"})

    # 2. a studies folder: real chest X-ray DICOMs (when the shared data is here) and phantom images to label
    studies = work / "studies"
    studies.mkdir(exist_ok=True)
    real = data_root()
    dicoms = sorted((real / "dicom" / "chest_xray").glob("*.dcm")) if real else []
    for i, d in enumerate(dicoms):
        shutil.copy(d, studies / f"cxr_{i}.dcm")  # ids in the datastore: no patient identifiers in names
    phantoms = bundle / "data" / "phantoms"
    rows = list(csv.DictReader(open(phantoms / "datalist.csv")))[: 20 if args.tiny else 60]

    # 3. the server
    port = args.port or free_port()
    app = Path(medclass_cli_path(medclass_cli, work / "label_app"))
    log = work / "server.log"
    cmd = server_command(app, studies, [bundle], port=port)
    print("\n$ monailabel " + " ".join(shlex.quote(c) for c in cmd[3:]), flush=True)
    proc, url = start_server(app, studies, [bundle], log_file=log, port=port)
    try:
        waited = wait_until_ready(url, proc, timeout=180, log_file=str(log))
        print(f"server answering at {url} after {waited:.1f} s (log: {log})")

        # 4. predictions over HTTP
        info = requests.get(f"{url}/info/", timeout=30).json()
        model = info["models"]["cxr_classification"]
        print(f"\n$ curl {url}/info/   -> model cxr_classification: type {model['type']}, labels {model['labels']}")
        for r in rows:  # the phantom images go into the datastore like any upload
            path = phantoms / r["image"]
            with open(path, "rb") as f:
                requests.put(f"{url}/datastore/image", params={"image": path.stem}, files={"file": (path.name, f)},
                             data={"params": "{}"}, timeout=60).raise_for_status()
        image_id = "cxr_0" if dicoms else Path(rows[0]["image"]).stem
        print(f"\n$ curl -X POST '{url}/infer/cxr_classification?image={image_id}&output=json' -F 'params={{}}'")
        res = requests.post(f"{url}/infer/cxr_classification", params={"image": image_id, "output": "json"},
                            data={"params": "{}"}, timeout=300)
        res.raise_for_status()
        for x in res.json()["labels"]:
            print(f"  {x['name']:<14} probability {x['probability']:.3f}  decision {x['prediction']} "
                  f"(threshold {x['threshold']:.2f})")
        print(f"\n$ curl -X POST '{url}/infer/cxr_classification?image={image_id}&output=image' "
              "-F 'params={\"saliency\": true}' -o saliency.png")
        res = requests.post(f"{url}/infer/cxr_classification", params={"image": image_id, "output": "image"},
                            data={"params": json.dumps({"saliency": True})}, timeout=300)
        res.raise_for_status()
        (work / "saliency.png").write_bytes(res.content)
        print(f"  saliency map of the top label written to {work / 'saliency.png'}")

        # 5. image-level labels into the datastore, then retrain through the server
        labels = model["labels"]
        for r in rows:
            info = {"labels": {n: int(float(r[n])) for n in labels}}
            requests.put(f"{url}/datastore/image/info", params={"image": Path(r["image"]).stem},
                         data={"info": json.dumps(info)}, timeout=60).raise_for_status()
        print(f"\n$ curl -X PUT '{url}/datastore/image/info?image=<id>' -F 'info={{\"labels\": {{\"effusion\": 1}}}}'"
              f"   (done for {len(rows)} images)")
        epochs = 1
        print(f"$ curl -X POST '{url}/train/cxr_classification' -H 'Content-Type: application/json' "
              f"-d '{{\"max_epochs\": {epochs}}}'")
        requests.post(f"{url}/train/cxr_classification", json={"max_epochs": epochs}, timeout=60).raise_for_status()
        t0 = time.monotonic()
        status = wait_for_training(url, timeout=900, poll=2)
        summary = next((line for line in status.get("details", []) if "retrained cxr_classification" in line), "")
        print(f"  training {status['status']} in {time.monotonic() - t0:.0f} s: {summary.split(' - ')[-1]}")
        if status["status"] != "DONE":
            print("\n".join(status.get("details", [])), file=sys.stderr)
            return 1

        # 6. what 3D Slicer does, with the client its MONAI Label module uses
        from monailabel.client import MONAILabelClient

        client = MONAILabelClient(url, tmpdir=str(work))
        slicer_model = "cxr_classification_saliency"
        config = client.info()["models"][slicer_model]["config"]
        print(f"\n3D Slicer's Auto Segmentation on {image_id} (model {slicer_model}, params {config}):")
        label_map, params = client.infer(slicer_model, image_id, {**config, "result_extension": ".nrrd",
                                                                    "result_dtype": "uint8"})
        print(f"  segment '{params['label_names'][0]}' from {label_map}; probabilities {params['probabilities']}")
        print(f"""
Connect 3D Slicer to {url} (what you click):
  1. Extensions Manager: install "MONAILabel"; restart Slicer.
  2. Modules > Active Learning > MONAILabel. Server: {url}, press the refresh button: the models and the
     datastore appear ("Classification Models: 1" counts cxr_classification; the segmentation list holds
     {slicer_model}).
  3. "Next Sample" loads an image without labels from the datastore (or load your own image: Slicer uploads it
     as a session when you run a model).
  4. Auto Segmentation: choose {slicer_model}, press "Run". The segment that appears is where the top
     finding's evidence lies (the saliency map above saliency_threshold, default 0.5); its name gives the finding,
     its probability and the decision at the model's threshold; the Python console prints every probability.
  5. "Submit Label" saves a segmentation as the image's final label; image-level labels (PUT
     /datastore/image/info, above) stay, and training reads those.
  OHIF: MONAI Label serves its OHIF build at {url}/ohif/ when the studies are a DICOMweb server (for example
    Orthanc: --studies http://127.0.0.1:8042/dicom-web).""")
        if args.keep_running:
            print("\nserver running; Ctrl+C to stop")
            try:
                proc.wait()
            except KeyboardInterrupt:
                pass
    finally:
        stop_server(proc)
    print(f"\nserver stopped (pid {proc.pid}); outputs in {work}")
    return 0


def medclass_cli_path(cli, folder: Path) -> str:
    """``medclass label-app FOLDER``: a writable copy of the app folder (MONAI Label writes logs there)."""
    print(f"\n$ medclass label-app {folder}")
    if cli(["label-app", str(folder)]) != 0:
        raise RuntimeError("medclass label-app failed")
    return str(folder)


if __name__ == "__main__":
    sys.exit(main())

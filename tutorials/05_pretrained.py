"""Tutorial 5: fine-tune a pretrained chest X-ray model on your own images.

With a few hundred labelled images, starting from weights trained on many more usually beats training from scratch.
medclass loads published weights into its own networks, without TorchXRayVision, torchvision or timm installed:

* TorchXRayVision's chest X-ray DenseNet-121 (``xrv:densenet121-res224-all``, trained on 8 public chest X-ray sets):
  the outputs for findings it shares with your labels (Effusion, Cardiomegaly, Pneumothorax, ...) start from its
  head rows, the others are new;
* ImageNet weights (``torchvision:resnet18``): a new head; grey images go into the RGB first layer summed over its
  channels (what the RGB network computes on a grey image repeated three times);
* then three ways to train: a linear probe (``freeze: backbone``: only the head learns), partial fine-tuning
  (``freeze: stages:N`` with the backbone at a lower learning rate, ``backbone_lr_scale``), or everything.

We show it on the 1,000 NIH ChestX-ray14 images in the shared data (MEDCLASS_DATA, default ../shared/data), with
the 14 ChestX-ray14 findings:

    python tutorials/05_pretrained.py                  # downloads the two weight files once (~75 MB, verified)
    python tutorials/05_pretrained.py --local-weights  # offline: stand-in files in the published layouts
    python tutorials/05_pretrained.py --tiny           # a 1-epoch smoke run at 64 px (what the test suite does)

Named weights are downloaded once into MEDCLASS_CACHE (default ~/.cache/medclass) from a pinned URL and checked
against their SHA-256; offline, the error names the URL and the exact path to put the file at. A file path works as
well as a name: its layout (torchvision, timm, TorchXRayVision, MedicalNet, medclass) is recognised from its keys.
``--local-weights`` (and ``--tiny``) makes stand-in files with random values in exactly the published layouts
(tests/networks/published.py) and passes their paths, so every step runs offline; their figures mean nothing, the
mechanics are the same. Every bundle command is printed first, so you can copy it for your own data.
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

import torch

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "bundles" / "cxr_classification"
sys.path.insert(0, str(ROOT))

from medclass import data_root  # noqa: E402
from medclass.data import CXR14_LABELS  # noqa: E402
from medclass.networks import WEIGHTS, Classifier, cache_dir  # noqa: E402
from _bundle_cli import run_bundle  # noqa: E402  (tutorials/_bundle_cli.py)

XRV = "xrv:densenet121-res224-all"
IMAGENET = "torchvision:resnet18"


def local_weights(folder: Path) -> dict[str, Path]:
    """Stand-in files with random values in the published layouts: TorchXRayVision's whole pickled DenseNet-121
    (18 outputs, its pathology list) and torchvision's ResNet-18 state dict, under their published file names."""
    from tests.networks.published import BasicBlock, RefResNet, drop_xrv_module, randomise, xrv_module

    folder.mkdir(parents=True, exist_ok=True)
    xrv = folder / "nih-pc-chex-mimic_ch-google-openi-kaggle-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt"
    try:
        net = randomise(xrv_module().DenseNet(in_channels=1, num_classes=18))
        net.pathologies = list(WEIGHTS[XRV].labels)
        torch.save(net, xrv)  # torch.save of the whole object, as TorchXRayVision released it
    finally:
        drop_xrv_module()  # medclass reads the file without TorchXRayVision
    resnet = folder / WEIGHTS[IMAGENET].filename.rsplit("/", 1)[1]  # resnet18-f37072fd.pth
    torch.save(randomise(RefResNet(BasicBlock, [2, 2, 2, 2])).state_dict(), resnet)
    return {XRV: xrv, IMAGENET: resnet}


def offline_message(name: str, cache: Path) -> str:
    """What a user without the file and without network is told (MEDCLASS_OFFLINE=1, an empty cache)."""
    env = {**os.environ, "MEDCLASS_CACHE": str(cache), "MEDCLASS_OFFLINE": "1"}
    code = (f"from medclass.networks import fetch\ntry:\n    fetch({name!r})\n"
            "except FileNotFoundError as e:\n    print(e)")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def model_record(path: Path) -> dict:
    """The metadata a trained model.pt carries: labels, architecture and where its weights started."""
    return Classifier.decode_extra_state(torch.load(path, weights_only=True)["_extra_state"])


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="one epoch, 64 px, a third of the images: a smoke run")
    ap.add_argument("--local-weights", action="store_true",
                    help="stand-in weight files in the published layouts instead of downloading the real ones")
    ap.add_argument("--workdir", type=Path, default=None, help="where your CSV, models and outputs go")
    args = ap.parse_args(argv)
    root = data_root(required=True)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="medclass-tutorial5-"))
    work.mkdir(parents=True, exist_ok=True)
    local = args.local_weights or args.tiny

    # ---------------------------------------------------------------------------------------------
    # Step 1. Your data: an image folder and a label CSV in the ChestX-ray14 format (as in tutorial 1).
    images = work / "images"
    images.mkdir(exist_ok=True)
    rows = list(csv.DictReader(open(root / "cxr14" / "labels_nih1000.csv")))
    if args.tiny:
        rows = rows[::3]
    with open(work / "my_labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Image Index", "Finding Labels", "Patient ID"])
        for r in rows:
            link = images / r["image_index"]
            if not link.exists():
                link.symlink_to(root / "cxr14" / r["path"])
            w.writerow([r["image_index"], r["finding_labels"], r["patient_id"]])
    print(f"Step 1: {len(rows)} images in {images}, labels in {work / 'my_labels.csv'}")

    # ---------------------------------------------------------------------------------------------
    # Step 2. The weights. By name, medclass downloads each file once from a pinned URL into its cache and checks
    # its SHA-256 (every name: medclass.networks.WEIGHTS; the README lists them). Offline, the error says where to
    # put the file. A stand-in file cannot pose as the named one (its checksum differs), so --local-weights passes
    # file paths, which is also how you use weights you downloaded yourself.
    for name in (XRV, IMAGENET):
        e = WEIGHTS[name]
        digest = e.sha256 or f"{e.sha256_prefix}... (prefix published in the file name)"
        print(f"Step 2: {name}: {e.description}\n  {e.url}\n  SHA-256 {digest}\n  cached as {cache_dir() / e.filename}")
    print("  offline and not cached, medclass says:", offline_message(XRV, work / "empty_cache"))
    sources = local_weights(work / "weights") if local else {XRV: XRV, IMAGENET: IMAGENET}
    sources = {k: str(v) for k, v in sources.items()}

    # ---------------------------------------------------------------------------------------------
    # Step 3. TorchXRayVision DenseNet-121, linear probe. A pretrained source fixes the architecture its tensors
    # need: arch densenet121, width 64 and the standard stem (a setting that contradicts the
    # file is an error naming both). Its value range ([-1024, 1024], one channel) is folded into the first layer,
    # so the bundle's chest X-ray preprocessing stays as it is. It was trained at 224 px: use that size for
    # full-size images (the NIH1000 copies here are 64x64 thumbnails). The training log lists what was loaded,
    # which head rows came from TorchXRayVision (all 14 ChestX-ray14 findings are among its 18) and what is new.
    size = [64, 64] if args.tiny else [224, 224]
    common = {"datalist": str(work / "my_labels.csv"), "dataset_dir": str(images), "label_names": list(CXR14_LABELS),
              "image_size": size, "progress_bar": False, "batch_size": 16 if args.tiny else 32}
    epochs = 1 if args.tiny else 8
    if args.tiny:
        common["bootstrap_samples"] = 100
    # width 64: the published networks' (the bundle's `width: auto` takes it from the file; naming it states it,
    # and a command-line null/None counts as not given)
    densenet = {"arch": "densenet121", "width": 64, "stem": "standard"}
    resnet = {"arch": "resnet18", "width": 64, "stem": "standard"}
    runs = {
        # only the head learns: quick, and the least prone to over-fitting a few hundred images
        "xrv_linear_probe": (densenet, {"pretrained": sources[XRV], "freeze": "backbone", "learning_rate": 0.003}),
        # the stem and first dense block frozen, the rest at a tenth of the head's learning rate; everything
        # unfrozen after half the epochs (unfreeze_epoch)
        "xrv_partial": (densenet, {"pretrained": sources[XRV], "freeze": "stages:2", "backbone_lr_scale": 0.1,
                                   "unfreeze_epoch": None if args.tiny else epochs // 2}),
        # ImageNet: the head is new (pretrained_skip_head is implied: ImageNet's 1000 classes are not findings)
        "imagenet_partial": (resnet, {"pretrained": sources[IMAGENET], "freeze": "stages:2",
                                      "backbone_lr_scale": 0.1}),
    }
    summary: dict = {}
    for step, (run, (arch, start)) in enumerate(runs.items(), start=3):
        out = work / run
        train = {**common, **arch, **start, "ckpt_dir": str(out / "models"), "log_dir": str(out / "runs"),
                 "max_epochs": epochs, "warmup_epochs": 0 if args.tiny else 1}
        print(f"\nStep {step}: {run}")
        run_bundle(BUNDLE, "train", {k: v for k, v in train.items() if v is not None})
        # evaluation rebuilds the same network (the architecture settings, no `pretrained`: it loads model.pt)
        evaluate = {**common, **arch, "ckpt_dir": str(out / "models"), "output_dir": str(out / "eval")}
        run_bundle(BUNDLE, "evaluate", evaluate, quiet=True)
        metrics = json.loads((out / "eval" / "metrics.json").read_text())
        record = model_record(out / "models" / "model.pt")["pretrained"]
        summary[run] = {"mean_auc": metrics["mean_auc"], "mean_auc_ci": metrics["mean_auc_ci"], "pretrained": record}
        pre = record["preprocessing"]
        print(f"  model.pt records: source {record['source']} ({record['layout']}, "
              f"SHA-256 {record['sha256'][:12]}...), "
              f"input channels {pre['source_channels']} -> {pre['channels']}, value range {pre['value_range']}, "
              f"mean {pre['mean']}, std {pre['std']}, trained at {pre['image_size']}, folded into the first layer: "
              f"{pre['folded']}; {len(record['label_rows'])} head rows transferred")
        auc = metrics["mean_auc"]
        print(f"  test mean AUC: {'not estimable' if auc is None else f'{auc:.3f}'} over "
              f"{len(metrics['mean_auc_labels'])} findings")

    # ---------------------------------------------------------------------------------------------
    # Step 6. Predict with the fine-tuned model: inference reads everything from model.pt, so the command is the
    # same as for a model trained from scratch (plus the architecture settings).
    best = max(summary, key=lambda k: -1.0 if summary[k]["mean_auc"] is None else summary[k]["mean_auc"])
    arch = runs[best][0]
    run_bundle(BUNDLE, "inference", {**common, **arch, "ckpt_dir": str(work / best / "models"),
                                     "input": str(root / "dicom" / "chest_xray"),
                                     "output_dir": str(work / "predictions")}, quiet=True)
    print(f"\nStep 6: predictions of {best} in {work / 'predictions' / 'predictions.csv'}")
    (work / "summary.json").write_text(json.dumps(summary, indent=1))
    if local:
        print("\nThe weights were random stand-ins (--local-weights): the AUCs above mean nothing.")
    print(f"Everything is in {work}")
    return work


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

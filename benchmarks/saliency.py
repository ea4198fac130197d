"""Faithfulness and cost of the saliency methods (medclass.saliency), on models trained by the bundles.

    python benchmarks/saliency.py                     # phantoms (trained here) + PneumoniaMNIST / AdrenalMNIST3D
    python benchmarks/saliency.py --model-2d M.pt --model-3d M3.pt --split-seed-2d 1 --split-seed-3d 0
    python benchmarks/saliency.py --tiny               # seconds; checks the script runs (figures meaningless)
    python benchmarks/saliency.py --set dilate_last_stage=true   # phantom models with other bundle settings
    python benchmarks/saliency.py --gradcam-layers backbone.layer3   # + Grad-CAM at other layers, same models

1. Pointing game on the synthetic phantoms with planted findings and masks (the bundles' default data: 2D chest
   phantoms, 3D CT-like volumes). A model is trained by the bundle's train workflow for ``--phantom-epochs``; for
   every test image and every finding present in it, the map for that label "hits" when its maximum lies inside
   the finding's mask (mask taken through the same preprocessing as the image). Share of hits per method, and
   the energy-based pointing figure: the map's mass inside the mask over the mask's area (1 = a flat map). Also:
   the hit rate over the maps the saliency handler draws by default (labels predicted positive:
   ``hit_rate_detected``) and the median distance from the peak to the mask in pixels/voxels (0 for a hit:
   ``median_peak_to_mask_px``; compare it with the size of a Grad-CAM grid cell).
2. Deletion test on real data (PneumoniaMNIST 2D, AdrenalMNIST3D 3D; models trained by the bundle with
   benchmarks/quality.py's recipe, ``--epochs-real`` epochs, or given with ``--model-2d/--model-3d``): for test
   images predicted positive, the drop of the target probability when the 10% most salient pixels/voxels are
   replaced by a blurred copy of the image, against the drop for a random 10% (mean of 3 draws): scattered random
   pixels (``ratio``) and the salient region itself moved to a random place (``ratio_shifted``; as contiguous as
   the salient region, so the comparison is not between a smooth and a salt-and-pepper change). Ratio per method.
3. Cost: seconds per image per method, relative to one forward pass (batch of ``--cost-batch`` images).

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
BUNDLES = {2: ROOT / "bundles" / "cxr_classification", 3: ROOT / "bundles" / "volume_classification"}
sys.path.insert(0, str(ROOT))

from medclass import data_root  # noqa: E402
from medclass.saliency import cell_centres, saliency_maps  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from quality import RECIPE, RECIPE_3D, run_workflow  # noqa: E402

from timing import median_seconds  # noqa: E402

# the phantom models' recipe: the bundles' values before they became `auto` (medclass.plan), which the figures in
# benchmarks/RESULTS.md were measured with
PHANTOM_RECIPE = {"width": 32, "learning_rate": 0.001, "warmup_epochs": 1, "label_smoothing": 0.0, "pos_weight": True,
                  "augment": {}, "early_stop_patience": 8}

METHODS = ["gradcam", "gradcam++", "occlusion", "vanilla", "smoothgrad", "gradcam-uniform", "gradcam++-uniform"]


def method_kwargs(method: str, spatial: tuple[int, ...]) -> dict:
    """Benchmark settings: occlusion windows of 1/8 (2D) or 1/4 (3D) of the side with half overlap; ``gradcam@L``
    / ``gradcam++@L`` is Grad-CAM / Grad-CAM++ at layer ``L`` (``--gradcam-layers``, ``--methods``); ``M-uniform`` is CAM method ``M`` with its grid upsampled
    as MONAI's CAMs and pytorch-grad-cam do (cells tiling the image evenly), the same-run baseline of medclass's
    receptive-field placement."""
    if method.endswith("-uniform"):
        return {**method_kwargs(method[: -len("-uniform")], spatial), "upsample": "uniform"}
    if method.startswith(("gradcam@", "gradcam++@")):
        base, layer = method.split("@", 1)
        return {"method": base, "target_layer": layer}
    if method in ("gradcam", "gradcam++"):
        return {"method": method}
    if method == "occlusion":
        div = 8 if len(spatial) == 2 else 4
        w = [max(1, s // div) for s in spatial]
        return {"window": w, "stride": [max(1, x // 2) for x in w] if len(spatial) == 2 else w}
    if method == "smoothgrad":
        return {"n_samples": 8}
    return {}


def load_workflow(bundle: Path, overrides: dict):
    from monai.bundle import ConfigWorkflow

    from medclass.bundle_tools import config_files

    wf = ConfigWorkflow(config_file=config_files(bundle, "evaluate.yaml"),
                        meta_file=str(bundle / "configs" / "metadata.json"), workflow_type="inference", **overrides)
    wf.initialize()
    return wf


def load_model(wf, path: Path) -> torch.nn.Module:
    net = wf.parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.eval()


def parse_settings(items: list[str]) -> dict:
    """``["dilate_last_stage=true", "width=16"]`` -> ``{"dilate_last_stage": True, "width": 16}`` (YAML values)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


# ------------------------------------------------------------------------------------------------ pointing game
def peak_position(m: np.ndarray) -> tuple[int, ...]:
    """The map's maximum. Upsampled coarse maps (Grad-CAM: a 4x4 grid at 64 px) have flat maxima; ``argmax`` would
    pick the plateau's first voxel in memory order (towards the image corner), so take the plateau voxel nearest
    to the plateau's centroid."""
    top = np.argwhere(m >= m.max() - 1e-6)
    centre = top.mean(axis=0)
    return tuple(int(v) for v in top[np.argmin(((top - centre) ** 2).sum(axis=1))])


def phantom_cases(dims: int, work: Path, epochs: int, n_images: int, tiny: bool, size: int | None = None,
                  reuse: bool = False, settings: dict | None = None, heldout_seed: int | None = None):
    """Train (or reuse) the phantom model in ``work`` and collect up to ``n_images`` pointing-game cases.

    Returns ``(net, labels, cases, info)``: ``cases`` are ``(image tensor, label index, mask bool array)`` for every
    finding present in a test image (or, with ``heldout_seed``, in any image of a new phantom set made with that
    seed), the mask taken through the image's preprocessing; ``info`` says what was trained and scored.
    """
    import yaml

    bundle = BUNDLES[dims]
    over = {"bundle_root": str(bundle), "dataset_dir": str(work / f"phantoms{dims}d"),
            "ckpt_dir": str(work / f"models{dims}d"), "output_dir": str(work / f"eval{dims}d"),
            "log_dir": str(work / f"runs{dims}d"), "progress_bar": False, "resume": False,
            **PHANTOM_RECIPE, "batch_size": 32 if dims == 2 else 8, **(settings or {})}
    if tiny:
        over.update({"image_size": [48] * dims, "width": 8, "phantoms": {"n": 40, "size": 48, "seed": 1,
                     **({"spatial_dims": 3} if dims == 3 else {})}})
    elif size:  # the bundle's phantom set (n, seed) at another size
        ph = yaml.safe_load((bundle / "configs" / "common.yaml").read_text())["phantoms"]
        over.update({"image_size": [size] * dims, "phantoms": {**ph, "size": size}})
    t0 = time.time()
    reused = reuse and (work / f"models{dims}d" / "model.pt").exists()
    if not reused:
        run_workflow(bundle, "train", {**over, "max_epochs": epochs})
    train_s = time.time() - t0
    wf = load_workflow(bundle, over)
    net = load_model(wf, work / f"models{dims}d" / "model.pt")
    if heldout_seed is not None:
        # a phantom set the model never saw (another seed, same size and count); every image of it is scored
        ph = over.get("phantoms") or yaml.safe_load((bundle / "configs" / "common.yaml").read_text())["phantoms"]
        if int(ph.get("seed", 0)) == int(heldout_seed):
            raise SystemExit(f"--heldout-seed {heldout_seed} is the training phantoms' seed")
        wf = load_workflow(bundle, {**over, "dataset_dir": str(work / f"phantoms{dims}d_seed{heldout_seed}"),
                                    "phantoms": {**ph, "seed": int(heldout_seed)}})
    data = wf.parser.get_parsed_content("data")
    pre = wf.parser.get_parsed_content("preprocessing")
    labels = list(net.label_names)
    cases = []  # (image tensor, label index, mask bool array)
    items = data.splits["test"] if heldout_seed is None else [it for split in ("training", "validation", "test")
                                                              for it in data.splits[split]]
    for it in items:
        present = [k for k, n in enumerate(labels) if it["label"][k] == 1 and it.get(f"mask_{n}")]
        if not present:
            continue
        img = pre({"image": it["image"], "id": it["id"]})["image"]
        for k in present:
            m = pre({"image": it[f"mask_{labels[k]}"], "id": it["id"]})["image"][0].numpy()
            lo, hi = float(m.min()), float(m.max())
            if hi > lo:
                cases.append((img, k, m > lo + 0.5 * (hi - lo)))
        if len(cases) >= n_images:
            break
    info = {"train_seconds": None if reused else round(train_s, 1),
            "phantoms": "test split" if heldout_seed is None else f"held-out set, seed {heldout_seed}",
            "epochs": "reused model" if reused else epochs}
    return net, labels, cases[:n_images], info


def detected_flags(net, cases: list) -> list[bool]:
    """Per case, whether its label is predicted positive at the model's thresholds (the maps the saliency handler
    draws by default)."""
    if not cases:
        return []
    xs = torch.stack([torch.as_tensor(c[0]).float() for c in cases])
    with torch.no_grad():
        probs = torch.cat([torch.sigmoid(net(xs[i : i + 8])) for i in range(0, len(cases), 8)])
    return [bool(probs[i, c[1]] >= net.thresholds[c[1]]) for i, c in enumerate(cases)]


def pointing_scores(cases: list, maps: list[np.ndarray], labels: list[str], detected: list[bool]) -> dict:
    """Pointing-game figures of ``maps[i]`` (one per case, the input's spatial shape) against ``cases[i]``'s mask."""
    from scipy.ndimage import distance_transform_edt

    hits, energy, dists, per_label = [], [], [], {}
    for c, mp in zip(cases, maps):
        peak = peak_position(mp)
        hit = bool(c[2][peak])
        hits.append(hit)
        dists.append(float(distance_transform_edt(~c[2])[peak]))
        # energy-based pointing (Score-CAM, Wang et al. 2020): share of the map's mass inside the mask,
        # over the mask's share of the image (1 = no better than a flat map)
        total = float(mp.sum())
        if total > 0:
            energy.append(float(mp[c[2]].sum()) / total / float(c[2].mean()))
        per_label.setdefault(labels[c[1]], []).append(hit)
    hits_det = [h for h, d in zip(hits, detected) if d]
    return {"hit_rate": round(float(np.mean(hits)), 3) if hits else None, "n": len(hits),
            "hit_rate_detected": round(float(np.mean(hits_det)), 3) if hits_det else None,
            "n_detected": len(hits_det),
            "median_peak_to_mask_px": round(float(np.median(dists)), 1) if dists else None,
            "energy_in_mask_over_area": round(float(np.mean(energy)), 2) if energy else None,
            "per_label": {k: round(float(np.mean(v)), 3) for k, v in per_label.items()}}


def pointing_game(dims: int, work: Path, epochs: int, n_images: int, n_slow: int, tiny: bool,
                  size: int | None = None, reuse: bool = False, settings: dict | None = None,
                  methods: list[str] = METHODS, heldout_seed: int | None = None) -> dict:
    net, labels, cases, info = phantom_cases(dims, work, epochs, n_images, tiny, size, reuse, settings,
                                             heldout_seed)
    out = {"n_maps": len(cases), **info,
           "mask_area_mean": round(float(np.mean([c[2].mean() for c in cases])), 4) if cases else None}
    detected = detected_flags(net, cases)
    out["n_detected"] = int(sum(detected))
    # the most a map that peaks on a Grad-CAM cell centre can score: the share of masks holding a cell centre of
    # the default Grad-CAM layer's grid (bilinear upsampling peaks on a cell centre; a finding smaller than the
    # cell spacing and between centres cannot be hit)
    if cases and any(m.startswith("gradcam") for m in methods):
        x0 = torch.as_tensor(cases[0][0]).float()[None]
        centres = [np.unique(np.clip(np.round(c).astype(int), 0, n - 1))
                   for c, n in zip(cell_centres(net, x0), x0.shape[2:])]
        inside = [bool(c[2][np.ix_(*centres)].any()) for c in cases]
        per = {}
        for c, hit in zip(cases, inside):
            per.setdefault(labels[c[1]], []).append(hit)
        out["gradcam_grid_bound"] = {"hit_rate": round(float(np.mean(inside)), 3),
                                     "per_label": {k: round(float(np.mean(v)), 3) for k, v in per.items()},
                                     "cell_spacing": [int(round(float(np.diff(c).mean()))) if len(c) > 1 else None
                                                      for c in centres]}
        print(f"  pointing {dims}D Grad-CAM grid bound {out['gradcam_grid_bound']}", flush=True)
    for method in methods:
        sel = cases if method not in ("occlusion", "smoothgrad") else cases[:n_slow]
        maps = []
        for start in range(0, len(sel), 8):
            chunk = sel[start : start + 8]
            x = torch.stack([torch.as_tensor(c[0]).float() for c in chunk])
            idx = torch.tensor([[c[1]] for c in chunk])
            kwargs = {"method": method, **method_kwargs(method, tuple(x.shape[2:]))}
            maps.extend(saliency_maps(net, x, targets=idx, **kwargs)[:, 0].numpy())
        out[method] = pointing_scores(sel, maps, labels, detected)
        print(f"  pointing {dims}D {method:<10} {out[method]}", flush=True)
    out["gradcam_per_label"] = out["gradcam"]["per_label"] if "gradcam" in out else {}
    return out


# ------------------------------------------------------------------------------------------------ deletion test
def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    from monai.transforms import GaussianSmooth

    sm = GaussianSmooth(sigma=sigma)
    return torch.stack([torch.as_tensor(sm(xi)) for xi in x])


def deletion_test(dims: int, work: Path, model: Path | None, split_seed: int, epochs: int, n_images: int,
                  n_slow: int, frac: float, tiny: bool, settings: dict | None = None,
                  methods: list[str] = METHODS) -> dict:
    from quality import _npz_setup

    root = data_root(required=True)
    name = "pneumoniamnist" if dims == 2 else "adrenalmnist3d"
    npz = root / "medmnist" / f"{name}.npz"
    setup = _npz_setup(npz)
    setup.pop("spatial_dims", None)
    bundle = BUNDLES[dims]
    recipe = {**RECIPE, **(RECIPE_3D if dims == 3 else {})}
    over = {**recipe, **setup, "split_seed": split_seed, "bundle_root": str(bundle),
            "ckpt_dir": str(work / f"real{dims}d" / "models"), "output_dir": str(work / f"real{dims}d" / "eval"),
            "log_dir": str(work / f"real{dims}d" / "runs"), "resume": False, **(settings or {})}
    if tiny:
        over.update({"width": 8})
    train_s = None
    if model is None:
        t0 = time.time()
        run_workflow(bundle, "train", {**over, "max_epochs": epochs, "seed": split_seed})
        train_s = round(time.time() - t0, 1)
        model = work / f"real{dims}d" / "models" / "model.pt"
    wf = load_workflow(bundle, {k: v for k, v in over.items() if k not in ("progress_bar",)})
    net = load_model(wf, model)
    ds = wf.parser.get_parsed_content("dataset")
    thr = net.thresholds.numpy()
    xs, ps = [], []
    for i in range(len(ds)):
        x = torch.as_tensor(ds[i]["image"]).float()
        with torch.no_grad():
            p = torch.sigmoid(net(x[None]))[0].numpy()
        if p[0] >= thr[0]:
            xs.append(x)
            ps.append(p[0])
        if len(xs) >= n_images:
            break
    x_all = torch.stack(xs)
    blurred = _blur(x_all, sigma=2.0 if dims == 2 else 1.5)
    out = {"dataset": name, "model": str(model), "n_images": len(xs), "fraction": frac, "train_seconds": train_s,
           "mean_target_prob": round(float(np.mean(ps)), 4), "replacement": "gaussian blur"}

    def prob(x):
        with torch.no_grad():
            return torch.sigmoid(net(x))[:, 0].numpy()

    p0 = prob(x_all)
    for method in methods:
        rng = np.random.default_rng(0)  # the same random baselines for every method
        n = len(xs) if method not in ("occlusion", "smoothgrad") else min(len(xs), n_slow)
        x, xb = x_all[:n], blurred[:n]
        maps = torch.cat([saliency_maps(net, x[s : s + 32], targets=[0],
                                        **{"method": method, **method_kwargs(method, tuple(x.shape[2:]))})
                          for s in range(0, n, 32)])[:, 0]
        flat = maps.flatten(1)
        k = max(1, int(round(frac * flat.shape[1])))
        top = torch.zeros_like(flat, dtype=torch.bool)
        # ties (e.g. flat zero regions) broken at random so exactly k pixels go
        noise = torch.rand(flat.shape, generator=torch.Generator().manual_seed(0)) * 1e-6
        top.scatter_(1, (flat + noise).topk(k, dim=1).indices, True)
        top = top.view(maps.shape).unsqueeze(1).expand_as(x)
        drop_sal = p0[:n] - prob(torch.where(top, xb, x))
        drops_rand = []
        for _ in range(3):
            r = torch.zeros_like(flat, dtype=torch.bool)
            for b in range(n):
                r[b, torch.as_tensor(rng.choice(flat.shape[1], k, replace=False))] = True
            r = r.view(maps.shape).unsqueeze(1).expand_as(x)
            drops_rand.append(p0[:n] - prob(torch.where(r, xb, x)))
        drop_rand = np.mean(drops_rand, axis=0)
        # second baseline: the same salient region moved to a random place (circular shift per image): as
        # contiguous as the salient one, so blurring it is as in-distribution; scattered voxels are not (blurring
        # 10% salt-and-pepper voxels changes the texture everywhere)
        drops_shift = []
        for _ in range(3):
            moved = torch.stack([torch.roll(top[b], shifts=[int(rng.integers(s)) for s in x.shape[2:]],
                                            dims=list(range(1, x.dim() - 1))) for b in range(n)])
            drops_shift.append(p0[:n] - prob(torch.where(moved, xb, x)))
        drop_shift = np.mean(drops_shift, axis=0)
        ds_, dr_, dm_ = float(np.mean(drop_sal)), float(np.mean(drop_rand)), float(np.mean(drop_shift))
        out[method] = {"salient_drop": round(ds_, 4), "random_drop": round(dr_, 4),
                       "ratio": round(ds_ / dr_, 2) if dr_ > 1e-6 else None,
                       "shifted_drop": round(dm_, 4), "ratio_shifted": round(ds_ / dm_, 2) if dm_ > 1e-6 else None,
                       "n": n}
        print(f"  deletion {dims}D {method:<10} {out[method]}", flush=True)
    return out, net, x_all


def cost(net, x: torch.Tensor, repeats: int = 5, methods: list[str] = METHODS) -> dict:
    """Median of ``repeats`` timings (the machine is shared: medians resist the other jobs' bursts)."""
    def timed(fn, n: int = repeats) -> float:
        return median_seconds(fn, n, warmup=1) / len(x)

    with torch.no_grad():
        fwd = timed(lambda: net(x))
    out = {"forward_s_per_image": round(fwd, 5)}
    for method in methods:
        kw = method_kwargs(method, tuple(x.shape[2:]))
        s = timed(lambda k={"method": method, **kw}: saliency_maps(net, x, targets=[0], **k),
                  1 if method == "occlusion" else repeats)
        out[method] = {"s_per_image": round(s, 4), "x_forward": round(s / fwd, 1)}
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, help="models and data go here (default: a temporary folder)")
    ap.add_argument("--phantom-epochs", type=int, default=6)
    ap.add_argument("--phantom-size-2d", type=int, help="phantom and image size (default: the bundle's, 128)")
    ap.add_argument("--phantom-size-3d", type=int, help="phantom and image size (default: the bundle's, 48)")
    ap.add_argument("--epochs-real", type=int, default=4, help="epochs for real-data models trained here")
    ap.add_argument("--model-2d", type=Path, help="PneumoniaMNIST model.pt (quality.py recipe) instead of training")
    ap.add_argument("--model-3d", type=Path, help="AdrenalMNIST3D model.pt (quality.py recipe) instead of training")
    ap.add_argument("--split-seed-2d", type=int, default=0, help="split_seed the 2D model was trained with")
    ap.add_argument("--split-seed-3d", type=int, default=0, help="split_seed the 3D model was trained with")
    ap.add_argument("--n-pointing", type=int, default=60, help="maps per pointing game (per dimensionality)")
    ap.add_argument("--n-deletion", type=int, default=120, help="images per deletion test")
    ap.add_argument("--n-slow", type=int, default=24, help="images for occlusion and smoothgrad")
    ap.add_argument("--fraction", type=float, default=0.10)
    ap.add_argument("--cost-batch", type=int, default=8)
    ap.add_argument("--skip", nargs="*", default=[], choices=["pointing2d", "pointing3d", "deletion2d", "deletion3d"])
    ap.add_argument("--reuse", action="store_true", help="reuse phantom models already in --workdir")
    ap.add_argument("--heldout-seed", type=int, help="score the pointing game on a new phantom set made with this "
                                                      "seed (all its images) instead of the test split")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="bundle settings (YAML values) for every model trained or loaded here, e.g. "
                         "dilate_last_stage=true")
    ap.add_argument("--gradcam-layers", nargs="*", default=[], metavar="LAYER",
                    help="also Grad-CAM at these layers (reported as gradcam@LAYER), e.g. backbone.layer3")
    ap.add_argument("--methods", nargs="*", default=METHODS, metavar="METHOD",
                    help=f"methods to score (default: {' '.join(METHODS)}); M-uniform = CAM method M upsampled "
                         "with evenly tiling cells (MONAI / pytorch-grad-cam), the baseline of the default placement; "
                         "gradcam@LAYER / gradcam++@LAYER = a CAM at another layer")
    ap.add_argument("--tiny", action="store_true", help="tiny settings: checks that the script runs")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.tiny:
        args.phantom_epochs, args.epochs_real = 1, 1
        args.n_pointing, args.n_deletion, args.n_slow, args.cost_batch = 4, 4, 2, 2
    work = args.workdir or Path(tempfile.mkdtemp(prefix="medclass-saliency-"))
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    settings = parse_settings(args.set)
    methods = list(args.methods) + [f"gradcam@{layer}" for layer in args.gradcam_layers]
    result: dict = {"benchmark": "saliency", "methods": methods, "workdir": str(work), "settings": settings}
    for dims in (2, 3):
        if f"pointing{dims}d" not in args.skip:
            print(f"pointing game {dims}D (phantoms, {args.phantom_epochs} epochs)", flush=True)
            result[f"pointing_{dims}d"] = pointing_game(dims, work, args.phantom_epochs, args.n_pointing,
                                                        args.n_slow, args.tiny,
                                                        args.phantom_size_2d if dims == 2 else args.phantom_size_3d,
                                                        args.reuse, settings, methods, args.heldout_seed)
        if f"deletion{dims}d" not in args.skip:
            print(f"deletion test {dims}D", flush=True)
            model = args.model_2d if dims == 2 else args.model_3d
            seed = args.split_seed_2d if dims == 2 else args.split_seed_3d
            res, net, x = deletion_test(dims, work, model, seed, args.epochs_real, args.n_deletion, args.n_slow,
                                        args.fraction, args.tiny, settings, methods)
            result[f"deletion_{dims}d"] = res
            result[f"cost_{dims}d"] = {"input": list(x.shape[1:]),
                                       **cost(net, x[: args.cost_batch], methods=methods)}
            print(f"  cost {dims}D {result[f'cost_{dims}d']}", flush=True)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

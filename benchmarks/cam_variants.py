"""CAM variants on the phantom pointing game: what it would take for class activation maps to hit small findings.

An experiment, not a product method: the bundle's 3D Grad-CAM misses the calcifications of the 3D phantoms
(radius 1.5-2.5 voxels at 48^3) while ResNet ``layer3``'s cells are 8 voxels apart. This scores, on a phantom
model trained by ``benchmarks/saliency.py`` (same work folder, same cases), CAMs that could lift that limit:

* other weightings of the same layer: ``gradcam`` (channel-mean gradient x activation, Selvaraju et al. 2017),
  ``hirescam`` (gradient x activation per cell, Draelos & Carin 2020), ``layercam`` (positive gradient x
  activation per cell, Jiang et al. 2021, made for shallow layers and small objects);
* a finer lattice from the same layer (``/STEP``): shift-and-stitch (Long et al. 2015), the CAM of the image
  translated by every multiple of STEP voxels below the layer's stride, the cells interleaved so that they lie
  STEP voxels apart (``(stride / STEP)^dims`` passes);
* products of normalised maps (``A*B``): a coarse layer gating a finer one.

Variant syntax ``KIND@LAYER[/STEP]``, joined by ``*`` for products, e.g.::

    python benchmarks/saliency.py --workdir /tmp/sal30 --phantom-epochs 30 --skip pointing2d deletion2d deletion3d
    python benchmarks/cam_variants.py --workdir /tmp/sal30 --dims 3 --variants gradcam@backbone.layer3 \
        gradcam@backbone.layer3/2 layercam@backbone.layer2 "gradcam@backbone.layer3*layercam@backbone.layer2/2"

The last line printed is one JSON object (the pointing-game figures of ``benchmarks/saliency.py`` per variant).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from saliency import detected_flags, parse_settings, phantom_cases, pointing_scores  # noqa: E402

from medclass.saliency import (  # noqa: E402
    CAM_WEIGHTINGS, model_state, normalize_maps, resolve_target_layer, upsample,
)
from medclass.saliency.methods import cam as layer_cam  # noqa: E402

KINDS = tuple(k for k in CAM_WEIGHTINGS if k != "gradcam++")


def raw_cam(net, x: torch.Tensor, idx: torch.Tensor, layer: str, kind: str):
    """The CAM of ``kind`` on ``layer``'s grid ``(B, *grid)`` for target indices ``idx`` ``(B, 1)``, and the grid's
    per-dim ``(stride, offset)`` in the input (medclass.saliency's own CAM with another weighting)."""
    with model_state(net):
        cam, _, _, geo = layer_cam(net, x, idx, resolve_target_layer(net, layer), kind, x.dim() - 2)
    return cam[:, 0], geo


def _translated(x: torch.Tensor, shift: tuple[int, ...]) -> torch.Tensor:
    """``x`` moved by ``shift`` voxels towards higher indices (edge values fill the gap)."""
    pad = []
    for s in reversed(shift):
        pad += [s, 0]
    return F.pad(x, pad, mode="replicate")[(slice(None), slice(None)) + tuple(slice(0, n) for n in x.shape[2:])]


def stitched_cam(net, x: torch.Tensor, idx: torch.Tensor, layer: str, kind: str, step: int | None):
    """``raw_cam`` on a lattice ``step`` voxels apart by shift-and-stitch (``step`` None or >= the layer's stride:
    the layer's own grid). Returns ``(cam (B, *fine grid), per-dim (stride, offset))``."""
    cam, geo = raw_cam(net, x, idx, layer, kind)  # also the zero shift's cells
    stride = int(round(geo[0][0]))
    if not step or step >= stride:
        return cam, geo
    if stride % step or any(int(round(s)) != stride for s, _ in geo):
        raise SystemExit(f"{layer}: step {step} must divide the layer's stride {stride} (the same on every axis)")
    n = stride // step
    fine = torch.zeros((x.shape[0],) + tuple(c * n for c in cam.shape[1:]))
    for k in itertools.product(range(n), repeat=x.dim() - 2):
        # cell j of the image moved by k*step lies at offset + stride*j - k*step of the original image:
        # fine index n*j + n-1-k, at offset - (n-1)*step + step * index
        c = cam if not any(k) else raw_cam(net, _translated(x, tuple(ki * step for ki in k)), idx, layer, kind)[0]
        fine[(slice(None),) + tuple(slice(n - 1 - ki, None, n) for ki in k)] = c
    return fine, [(float(step), off - (n - 1) * step) for _, off in geo]


def variant_maps(net, x: torch.Tensor, idx: torch.Tensor, layer: str, kind: str, step: int | None) -> torch.Tensor:
    """One variant's maps ``(B, *spatial)``, each min-max scaled to ``[0, 1]`` as ``saliency_maps`` does."""
    cam, geo = stitched_cam(net, x, idx, layer, kind, step)
    return normalize_maps(upsample(cam[:, None], x.shape[2:], geo))[:, 0]


def parse_variant(spec: str) -> list[tuple[str, str, int | None]]:
    parts = []
    for term in spec.split("*"):
        kind, sep, rest = term.partition("@")
        layer, _, step = rest.partition("/")
        if kind not in KINDS or not sep or not layer:
            raise SystemExit(f"variant {term!r}: expected KIND@LAYER[/STEP] with KIND one of {KINDS}")
        parts.append((kind, layer, int(step) if step else None))
    return parts


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, required=True, help="benchmarks/saliency.py's work folder (its model)")
    ap.add_argument("--dims", type=int, choices=(2, 3), default=3)
    ap.add_argument("--variants", nargs="+", required=True)
    ap.add_argument("--n-pointing", type=int, default=60)
    ap.add_argument("--heldout-seed", type=int, help="score a new phantom set made with this seed")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="the bundle settings of the model")
    ap.add_argument("--tiny", action="store_true", help="the model of benchmarks/saliency.py --tiny")
    args = ap.parse_args(argv)
    if not (args.workdir / f"models{args.dims}d" / "model.pt").exists():
        raise SystemExit(f"no {args.dims}D phantom model in {args.workdir}: train it with benchmarks/saliency.py")
    variants = {spec: parse_variant(spec) for spec in args.variants}
    net, labels, cases, info = phantom_cases(args.dims, args.workdir, 0, args.n_pointing, args.tiny, reuse=True,
                                             settings=parse_settings(args.set), heldout_seed=args.heldout_seed)
    xs = torch.stack([torch.as_tensor(c[0]).float() for c in cases])
    idx = torch.tensor([[c[1]] for c in cases])
    detected = detected_flags(net, cases)
    cache: dict[tuple, torch.Tensor] = {}
    result = {"benchmark": "cam_variants", "workdir": str(args.workdir), "dims": args.dims, "n_maps": len(cases),
              "phantoms": info["phantoms"]}
    for spec, parts in variants.items():
        maps = torch.ones_like(xs[:, 0])
        for part in parts:
            if part not in cache:
                cache[part] = torch.cat([variant_maps(net, xs[i : i + 8], idx[i : i + 8], part[1], part[0], part[2])
                                         for i in range(0, len(xs), 8)])
            maps = maps * cache[part]
        result[spec] = pointing_scores(cases, list(maps.numpy()), labels, detected)
        print(f"  {spec}: {result[spec]}", flush=True)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

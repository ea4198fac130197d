"""One forward pass for a prediction and its CAM: :func:`medclass.saliency.explain` returns the inference pass's own
logits with maps equal to :func:`saliency_maps`'; the layers before the CAM layer record no gradients; bf16 maps
still find the finding; the saliency workflow's handler takes its CAMs from the evaluator's forward pass."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from monai.data import DataLoader

from medclass.engines import Evaluator
from medclass.handlers import SaliencyHandler
from medclass.inferers import PredictionInferer, tta_views
from medclass.networks import build_classifier
from medclass.saliency import cam_forward, explain, resolve_target_layer, saliency_maps
from tests.test_saliency import FAST_KW, SIZES, _blob_batch, _build, _lit, trained


def _autocast(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("arch", ["densenet121", "resnet18", "vit"])
def test_explain_gives_the_inference_logits_and_the_maps(arch, precision):
    torch.manual_seed(0)
    model = _build(arch, 2).eval()
    x = torch.randn(3, 1, *SIZES[2])
    with torch.no_grad(), _autocast(precision):
        ref = model(x).float()
    for method in ("gradcam", "gradcam++", "occlusion"):
        logits, maps = explain(model, x, method=method, precision=precision, **FAST_KW.get(method, {}))
        assert torch.equal(logits, ref), method  # the prediction itself, bit for bit
        top = ref.argmax(1, keepdim=True)  # targets=None: each image's top label of these logits
        same = saliency_maps(model, x, targets=top, method=method, precision=precision, **FAST_KW.get(method, {}))
        assert maps.shape == (3, 1, *SIZES[2]) and torch.allclose(maps, same, atol=1e-6), method


def test_cam_forward_records_gradients_after_the_cam_layer_only():
    model = _build("densenet121", 2).eval()
    params = list(model.parameters())
    first, head = params[0], params[-1]  # the stem's convolution, the classifier's bias
    record = cam_forward(model, torch.randn(2, 1, *SIZES[2]), resolve_target_layer(model, None))
    grads = torch.autograd.grad(record.logits.sum(), [first, record.act, head], allow_unused=True)
    assert grads[0] is None  # nothing before the layer was recorded: the pass cost an inference pass
    assert grads[1] is not None and grads[2] is not None
    assert first.grad is None and head.grad is None  # and nothing left on the parameters


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_bf16_maps_find_the_square_and_match_fp32(method):
    model = trained("densenet121", 2)
    gen = torch.Generator().manual_seed(1)
    corners = ((0, 0), (1, 1))
    x = torch.cat([_blob_batch(1, SIZES[2], gen, corner=c)[0] for c in corners])
    fp32 = saliency_maps(model, x, targets=["square"], method=method)
    bf16 = saliency_maps(model, x, targets=["square"], method=method, precision="bf16")
    for b, corner in enumerate(corners):
        ok, why = _lit(bf16[b, 0], corner)
        assert ok, f"bf16 {method}: corner {corner} not lit ({why})"
    assert float((bf16 - fp32).abs().max()) < 0.1  # measured 0.007-0.012 here
    with pytest.raises(ValueError, match="precision"):
        saliency_maps(model, x, precision="half")


def _run_workflow(tmp_path, tta: str, precision: str = "bf16"):
    torch.manual_seed(0)
    net = build_classifier("densenet121", 2, 1, 3, image_size=(32, 32), width=4, growth_rate=4, bn_size=2,
                           block_config=(2, 2), label_names=["a", "b", "c"]).eval()
    gen = torch.Generator().manual_seed(0)
    items = [{"image": torch.randn((1, 32, 32), generator=gen), "id": f"img{k}"} for k in range(5)]
    calls: list[int] = []
    net.register_forward_hook(lambda m, i, o: calls.append(int(i[0].shape[0])))
    out = tmp_path / tta
    handler = SaliencyHandler(out, net, method="gradcam", targets=["b"])  # attached as a bundle attaches it
    evaluator = Evaluator(device=torch.device("cpu"), val_data_loader=DataLoader(items, batch_size=2), network=net,
                          inferer=PredictionInferer(task="multilabel", tta=tta), precision=precision,
                          val_handlers=[handler])
    evaluator.run()
    rows = list(csv.DictReader(open(out / "saliency" / "index.csv")))
    return net, items, calls, {r["id"]: np.load(out / "saliency" / r["map"]) for r in rows}


def test_saliency_workflow_takes_its_cams_from_the_evaluators_pass(tmp_path):
    net, items, calls, maps = _run_workflow(tmp_path, "none")
    assert calls == [2, 2, 1]  # one forward pass per batch: the prediction's, no second one for the maps
    assert sorted(maps) == [f"img{k}" for k in range(5)]
    for start in (0, 2, 4):  # equal to the maps of the same batch, at the evaluator's precision
        batch = torch.stack([items[k]["image"] for k in range(start, min(start + 2, 5))])
        ref = saliency_maps(net, batch, targets=["b"], method="gradcam", precision="bf16")
        for j in range(batch.shape[0]):
            assert np.allclose(maps[f"img{start + j}"], ref[j, 0].numpy(), atol=1e-6)


def test_saliency_workflow_with_tta_computes_the_maps_apart(tmp_path):
    _, _, calls, maps = _run_workflow(tmp_path, "flip")
    # each batch: the TTA views for the prediction, then the maps' own pass (nothing to take from an average)
    views = len(tta_views("flip", 2))
    assert calls == [2] * (views + 1) * 2 + [1] * (views + 1)
    assert len(maps) == 5 and all(0.0 <= m.min() and m.max() <= 1.0 for m in maps.values())

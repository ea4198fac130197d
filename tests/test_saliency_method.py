"""The saliency handler configured by objects: a SaliencyMethod (method, layer, options), a TargetChoice and a
SaliencyOutput; the flat config keywords set the same fields."""

from __future__ import annotations

import csv

import pytest
import torch
from ignite.engine import Engine

from medclass.handlers import SaliencyHandler
from medclass.handlers.saliency import SaliencyOutput, TargetChoice
from medclass.networks import build_classifier
from medclass.saliency import SaliencyMethod, saliency_maps


def test_saliency_method_checks_and_normalises():
    m = SaliencyMethod("Grad-CAM++", target_layer="", options={"upsample": "uniform"})
    assert m.name == "gradcam++" and m.target_layer is None and dict(m.options) == {"upsample": "uniform"}
    assert SaliencyMethod.of("occlusion") == SaliencyMethod("occlusion")
    assert SaliencyMethod.of({"name": "occlusion", "options": {"window": 4}}).options == {"window": 4}
    with pytest.raises(ValueError, match="unknown saliency method"):
        SaliencyMethod("lime")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['window'\] for method 'gradcam'"):
        SaliencyMethod("gradcam", options={"window": 4})
    net = build_classifier("resnet18", 2, 1, 2, image_size=(16, 16), width=4)
    x = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(SaliencyMethod("occlusion", options={"window": 4}).maps(net, x, [1]),
                               saliency_maps(net, x, [1], method="occlusion", window=4))


def test_handler_objects_and_flat_keywords_are_the_same(tmp_path):
    net = build_classifier("resnet18", 2, 1, 2, image_size=(16, 16), width=4, label_names=["a", "b"])
    flat = SaliencyHandler(tmp_path / "f", net, method="occlusion", targets=["b"], method_kwargs={"window": 4},
                           max_images=1, write_png=False, negatives=True)
    objs = SaliencyHandler(tmp_path / "o", net, method=SaliencyMethod("occlusion", options={"window": 4}),
                           targets=TargetChoice(["b"], negatives=True),
                           output=SaliencyOutput(max_images=1, write_png=False))
    assert (flat.method, flat.choice, flat.output) == (objs.method, objs.choice, objs.output)
    with pytest.raises(TypeError, match="inside method"):
        SaliencyHandler(tmp_path, net, method=SaliencyMethod("gradcam"), target_layer="backbone.layer4")
    with pytest.raises(TypeError, match="unknown setting"):
        SaliencyHandler(tmp_path, net, max_target=2)
    with pytest.raises(ValueError, match="max_targets must be >= 1"):
        SaliencyHandler(tmp_path, net, max_targets=0)

    def step(engine, batch):
        return [{"pred": torch.sigmoid(row)} for row in net(batch["image"])]

    for h in (flat, objs):
        engine = Engine(step)
        h.attach(engine)
        engine.run([{"image": torch.randn(2, 1, 16, 16), "id": ["x", "y"]}])
        rows = list(csv.DictReader(open(h.output_dir / "index.csv")))
        assert [(r["id"], r["label"], r["method"]) for r in rows] == [("x", "b", "occlusion")]
        assert not list(h.output_dir.glob("*.png")) and len(list(h.output_dir.glob("*.npy"))) == 1

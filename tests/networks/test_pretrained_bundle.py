"""The chest X-ray bundle trains from a torchvision-layout ResNet-18 file with a partly frozen backbone, a lower
backbone learning rate and unfreezing after one epoch; evaluation rebuilds the same network from common.yaml and
reads the preprocessing record from model.pt."""

from __future__ import annotations

import pytest
import torch

from medclass.networks import load_weights
from tests.bundles.test_bundles import ROOT, workflow
from tests.conftest import error_chain
from tests.networks.published import BasicBlock, RefResNet, randomise

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_cxr_bundle_fine_tunes_a_pretrained_resnet(tmp_path):
    bundle = ROOT / "cxr_classification"
    weights = tmp_path / "resnet18-f37072fd.pth"
    torch.save(randomise(RefResNet(BasicBlock, [2, 2, 2, 2])).state_dict(), weights)
    arch = {"width": None, "stem": "standard"}  # what the source fixes, in the bundle's settings
    with pytest.raises(Exception) as err:  # the bundle's width 8 contradicts the file
        workflow(bundle, "train", tmp_path, pretrained=str(weights)).parser.get_parsed_content("network")
    assert "width=8 contradicts pretrained" in error_chain(err.value)

    wf = workflow(bundle, "train", tmp_path, pretrained=str(weights), max_epochs=2, freeze="stages:2",
                  backbone_lr_scale=0.1, unfreeze_epoch=1, **arch)
    net = wf.parser.get_parsed_content("network")
    opt = wf.parser.get_parsed_content("optimizer")
    assert {g["name"]: g["lr"] for g in opt.param_groups} == {"head": 1e-3, "backbone": pytest.approx(1e-4)}
    assert not net.backbone.layer1[0].conv1.weight.requires_grad and net.backbone.layer2[0].conv1.weight.requires_grad
    stem_before = net.backbone.conv1.weight.detach().clone()
    wf.run()
    assert net.backbone.conv1.weight.requires_grad  # unfrozen for epoch 2
    assert not torch.equal(net.backbone.conv1.weight, stem_before)  # and trained in it
    wf.finalize()

    evaluated = workflow(bundle, "evaluate", tmp_path, **arch).parser.get_parsed_content("network")
    load_weights(evaluated, tmp_path / "models" / "model.pt")
    record = evaluated.pretrained
    assert record["layout"] == "torchvision_resnet" and record["source"] == weights.name
    assert record["preprocessing"]["folded"] and record["preprocessing"]["channels"] == "sum"

"""Fine-tuning controls: frozen parameters and BatchNorm statistics stay unchanged through training steps, the
optimizer holds the stated learning rates, unfreezing after K epochs."""

from __future__ import annotations

import types

import pytest
import torch

from medclass.networks import Unfreeze, build_classifier, freeze, param_groups, stages, unfreeze


def _small(arch="resnet18", **kw):
    if arch.startswith("vit"):
        return build_classifier("vit", 2, 1, 3, 28, hidden_size=32, mlp_dim=64, num_layers=3, num_heads=2, **kw)
    return build_classifier(arch, 2, 1, 3, 32, width=8, **kw)


def _step(model, opt, n=2):
    model.train()
    for _ in range(n):
        x = torch.randn(4, 1, *model.image_size)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items() if v.dtype.is_floating_point}


@pytest.mark.parametrize("arch", ["resnet18", "densenet121", "vit"])
def test_linear_probe_changes_only_the_head(arch):
    model = _small(arch, freeze="backbone")
    before = _snapshot(model)
    opt = torch.optim.AdamW(param_groups(model, lr=1e-2, backbone_lr_scale=0.1), lr=1e-2, weight_decay=0.05)
    _step(model, opt)
    after = _snapshot(model)
    head = model.head_name + "."
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(head) for k in changed), sorted(changed)[:5]
    for name in model.frozen_norms:  # eval mode although model.train() was called
        assert not model.get_submodule(name).training


def test_stages_freeze_the_first_n_and_keep_their_statistics():
    model = _small("resnet18", freeze="stages:2")  # stem + layer1
    assert [s for s, _ in stages(model)] == ["stem", "layer1", "layer2", "layer3", "layer4"]
    before = _snapshot(model)
    opt = torch.optim.SGD(param_groups(model, lr=0.1), lr=0.1)
    _step(model, opt)
    after = _snapshot(model)
    for k in (k for k in before if k.startswith("backbone.")):
        if k.startswith(("backbone.conv1.", "backbone.bn1.", "backbone.layer1.")):  # weights and BN statistics
            assert torch.equal(before[k], after[k]), k
        elif k.endswith(("conv1.weight", "running_mean")):  # (a conv bias before a BN gets no gradient)
            assert not torch.equal(before[k], after[k]), k
    assert not model.backbone.bn1.training and model.backbone.layer2[0].bn1.training


def test_param_groups_hold_the_stated_learning_rates():
    model = _small("densenet121")
    groups = param_groups(model, lr=1e-3, backbone_lr_scale=0.1)
    opt = torch.optim.AdamW(groups, lr=1e-3)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == {"head": 1e-3, "backbone": pytest.approx(1e-4)}
    head_ids = {id(p) for p in model.get_head().parameters()}
    assert {id(p) for p in opt.param_groups[0]["params"]} == head_ids
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    assert list(param_groups(model, lr=1e-3)) == list(model.parameters())  # scale 1: today's single group
    with pytest.raises(ValueError, match="backbone_lr_scale"):
        param_groups(model, lr=1e-3, backbone_lr_scale=0)


def test_unfreeze_after_k_epochs_and_on_resume():
    model = _small("resnet18", freeze="backbone")
    handler = Unfreeze(model, epoch=2)
    engine = types.SimpleNamespace(state=types.SimpleNamespace(epoch=2))
    handler(engine)
    assert not model.backbone.conv1.weight.requires_grad
    engine.state.epoch = 3
    handler(engine)
    assert all(p.requires_grad for p in model.parameters()) and model.frozen_norms == []
    model.train()
    assert model.backbone.bn1.training
    Unfreeze(model, epoch=None)(engine)  # null: nothing to do
    with pytest.raises(ValueError, match="unfreeze_epoch"):
        Unfreeze(model, epoch=-1)


def test_unfreeze_handler_attaches_to_ignite():
    from ignite.engine import Engine

    model = _small("resnet18", freeze="stages:1")
    seen = []
    engine = Engine(lambda e, b: seen.append(model.backbone.conv1.weight.requires_grad))
    Unfreeze(model, epoch=1).attach(engine)
    engine.run([0], max_epochs=3)
    assert seen == [False, True, True]


def test_freeze_settings_are_checked():
    with pytest.raises(ValueError, match="freeze must be 'none', 'backbone' or 'stages:N'"):
        _small("resnet18", freeze="layers")
    with pytest.raises(ValueError, match=r"N must be in 1\.\.5"):
        _small("resnet18", freeze="stages:9")
    model = _small("resnet18", freeze="backbone")
    unfreeze(model)
    assert all(p.requires_grad for p in model.parameters())
    assert freeze(model, "none") == []

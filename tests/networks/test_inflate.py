"""2D -> 3D inflation (I3D / centre / ACS): numerical equivalence on depth-constant volumes, loading, errors."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.nets import DenseNet121

from medclass.networks import Classifier, build_classifier, inflate_2d_to_3d, load_weights

SMALL = {
    "resnet18": {"width": 8},
    "densenet121": {"width": 8, "growth_rate": 4, "bn_size": 2},
}


def _randomize_norms(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics/affine (identity norms would hide a norm that is not carried over)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(0.4 * torch.rand(m.num_features, generator=g) - 0.2)
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.bias.copy_(0.4 * torch.rand(m.num_features, generator=g) - 0.2)
    return model


def _pair(arch="resnet18", stem="small", num_classes=3, **kw):
    """A trained-looking 2D classifier and a fresh 3D one of the same arch/width/stem."""
    torch.manual_seed(0)
    m2 = build_classifier(arch, 2, 1, num_classes, 28, stem=stem, **{**SMALL[arch], **kw})
    m3 = build_classifier(arch, 3, 1, num_classes, 28, stem=stem, **SMALL[arch])
    return _randomize_norms(m2).eval(), m3


def _depth_constant(x2: torch.Tensor, depth: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, C, H, W, depth)``, every slice the 2D image (depth is the last axis)."""
    return x2.unsqueeze(-1).expand(*x2.shape, depth).contiguous()


def _conv_pair():
    torch.manual_seed(0)
    c2 = nn.Conv2d(3, 5, 3, padding=1)
    c3 = nn.Conv3d(3, 5, 3, padding=1)
    return c2, c3


# ---------------------------------------------------------------- one convolution
def test_i3d_conv_depth_constant_input_gives_2d_activation():
    c2, c3 = _conv_pair()
    state = inflate_2d_to_3d(c2.state_dict(), c3, "i3d")
    assert state["weight"].shape == (5, 3, 3, 3, 3)
    torch.testing.assert_close(state["weight"].sum(-1), c2.weight.detach())  # repeated / kD
    torch.testing.assert_close(state["bias"], c2.bias.detach())
    c3.load_state_dict(state)
    x2 = torch.randn(2, 3, 10, 12)
    with torch.no_grad():
        y2, y3 = c2(x2), c3(_depth_constant(x2, 6))
    # every interior slice is exactly the 2D activation
    for d in range(1, 5):
        torch.testing.assert_close(y3[..., d], y2, atol=1e-5, rtol=1e-5)
    # the border slices see one zero-padded slice of three: 2/3 of the kernel response (plus the bias). This is why
    # a whole i3d network on a depth-constant volume is close to, not equal to, the 2D one (test below)
    b = c2.bias.detach().view(1, -1, 1, 1)
    for d in (0, 5):
        torch.testing.assert_close(y3[..., d], b + (y2 - b) * 2 / 3, atol=1e-5, rtol=1e-5)


def test_center_conv_filters_each_slice_as_2d():
    c2, c3 = _conv_pair()
    state = inflate_2d_to_3d(c2.state_dict(), c3, "center")
    w = state["weight"]
    torch.testing.assert_close(w[..., 1], c2.weight.detach())
    assert not w[..., 0].any() and not w[..., 2].any()
    c3.load_state_dict(state)
    x3 = torch.randn(2, 3, 10, 12, 5)  # any volume, not only depth-constant ones
    with torch.no_grad():
        y3 = c3(x3)
        for d in range(5):
            torch.testing.assert_close(y3[..., d], c2(x3[..., d]), atol=1e-5, rtol=1e-5)


def test_model_less_inflation_with_depth():
    m2, _ = _pair()
    out = inflate_2d_to_3d(m2.state_dict(), None, "i3d", depth=5)
    assert out["backbone.conv1.weight"].shape == (8, 1, 3, 3, 5)
    assert out["backbone.layer2.0.downsample.0.weight"].shape == (16, 8, 1, 1, 1)  # 1x1 stays 1 deep
    assert out["backbone.fc.weight"].shape == m2.backbone.fc.weight.shape
    acs = inflate_2d_to_3d(m2.state_dict(), None, "acs")
    assert acs["backbone.conv1.weight"].shape == (8, 1, 3, 3)
    assert acs["backbone.layer2.0.downsample.0.weight"].shape == (16, 8, 1, 1, 1)
    with pytest.raises(ValueError, match="depth"):
        inflate_2d_to_3d(m2.state_dict(), None, "i3d")
    with pytest.raises(ValueError, match="depth"):
        inflate_2d_to_3d(m2.state_dict(), build_classifier("resnet18", 3, 1, 3, 28, width=8), "i3d", depth=3)


# ---------------------------------------------------------------- whole networks
@pytest.mark.parametrize("arch,stem,size", [("resnet18", "small", 32), ("densenet121", "medium", 16)])
def test_center_whole_network_equals_2d_on_depth_constant_volume(arch, stem, size):
    m2, m3 = _pair(arch, stem)
    m3.load_state_dict(inflate_2d_to_3d(m2.state_dict(), m3, "center"))
    m3.eval()
    x2 = torch.randn(2, 1, size, size)
    with torch.no_grad():
        torch.testing.assert_close(m3(_depth_constant(x2, 16)), m2(x2), atol=1e-4, rtol=1e-4)


def _replicate_padding(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            m.padding_mode = "replicate"
    return model


@pytest.mark.parametrize("stem", ["small", "standard"])
def test_i3d_whole_resnet18_exact_without_depth_borders(stem):
    # With zero padding the depth borders see fewer slices (see the single-conv test). Replicate padding in both
    # models removes that border effect along depth and leaves the inflation itself: the 3D model fed a
    # depth-replicated image then gives the 2D logits (7x7 stride-2 stem, max-pool, strided 1x1 shortcuts included)
    m2, m3 = _pair("resnet18", stem)
    m3.load_state_dict(inflate_2d_to_3d(m2.state_dict(), m3, "i3d"))
    _replicate_padding(m2)
    _replicate_padding(m3.eval())
    x2 = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m3(_depth_constant(x2, 8)), m2(x2), atol=1e-4, rtol=1e-4)


def test_i3d_whole_resnet18_close_with_zero_padding():
    # The real (zero-padded) network: the border effect reaches further into the volume at every 3x3x3 conv, and the
    # global average pool mixes the border slices in, so logits/features are close but not equal; the gap shrinks
    # as the volume gets deeper (the border slices weigh less in the average).
    m2, m3 = _pair("resnet18", "small")
    m3.load_state_dict(inflate_2d_to_3d(m2.state_dict(), m3, "i3d"))
    m3.eval()
    x2 = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        f2 = m2.forward_features(x2)
        rel = {}
        for depth in (14, 56):
            f3 = m3.forward_features(_depth_constant(x2, depth))
            rel[depth] = ((f3 - f2).norm() / f2.norm()).item()
        assert F.cosine_similarity(f3, f2).min() > 0.98  # depth 56
    assert rel[56] < 0.6 * rel[14] and rel[56] < 0.3


def test_head_thresholds_and_label_names_carried_over(caplog):
    m2, m3 = _pair(label_names=["effusion", "nodule", "mass"], thresholds=[0.2, 0.3, 0.4])
    with torch.no_grad():
        m2.get_head().weight.add_(1.0)
    with caplog.at_level(logging.WARNING):
        m3.load_state_dict(inflate_2d_to_3d(m2.state_dict(), m3, "i3d"))
    assert "spatial_dims" not in caplog.text  # the metadata is the 3D model's (no "saved from a 2D model" warning)
    assert m3.label_names == ["effusion", "nodule", "mass"]
    torch.testing.assert_close(m3.thresholds, torch.tensor([0.2, 0.3, 0.4]))
    torch.testing.assert_close(m3.get_head().weight, m2.get_head().weight)
    torch.testing.assert_close(m3.backbone.bn1.running_var, m2.backbone.bn1.running_var)
    meta = Classifier.decode_extra_state(m3.state_dict()["_extra_state"])
    assert meta["spatial_dims"] == 3 and meta["label_names"] == ["effusion", "nodule", "mass"]


# ---------------------------------------------------------------- sources: file, nested file, state dict, MONAI
def test_file_nested_and_state_dict_sources(tmp_path):
    m2, m3 = _pair()
    plain, nested = tmp_path / "plain.pt", tmp_path / "nested.pt"
    torch.save(m2.state_dict(), plain)
    torch.save({"model": {f"module.{k}": v for k, v in m2.state_dict().items()}, "epoch": 2}, nested)
    ref = inflate_2d_to_3d(m2.state_dict(), m3, "i3d")
    for src in (plain, str(nested)):
        out = inflate_2d_to_3d(src, m3, "i3d")
        assert out.keys() == ref.keys()
        assert all(torch.equal(out[k], ref[k]) for k in ref if not k.endswith("_extra_state"))
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        inflate_2d_to_3d(tmp_path / "absent.pt", m3)


def test_plain_monai_2d_backbone_inflates_into_backbone():
    net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2, init_features=8, growth_rate=4, bn_size=2)
    m3 = build_classifier("densenet121", 3, 1, 2, 64, stem="standard", width=8, growth_rate=4, bn_size=2)
    out = inflate_2d_to_3d(net.state_dict(), m3, "i3d")
    assert out["backbone.features.conv0.weight"].shape == (8, 1, 7, 7, 7)
    report = load_weights(m3, net.state_dict(), inflate="center")
    assert report.target == "backbone"
    torch.testing.assert_close(m3.backbone.features.conv0.weight[..., 3], net.features.conv0.weight)


# ---------------------------------------------------------------- build_classifier / load_weights wiring
def test_build_classifier_pretrained_2d_with_inflate(tmp_path):
    m2, _ = _pair(label_names=["a", "b", "c"], thresholds=0.3)
    path = tmp_path / "model2d.pt"
    torch.save(m2.state_dict(), path)
    m3 = build_classifier("resnet18", 3, 1, 3, 28, stem="small", width=8, pretrained=path, inflate="i3d")
    w2 = m2.backbone.conv1.weight
    torch.testing.assert_close(m3.backbone.conv1.weight, w2.unsqueeze(-1).expand(-1, -1, -1, -1, 3) / 3)
    assert m3.label_names == ["a", "b", "c"]
    torch.testing.assert_close(m3.thresholds, torch.full((3,), 0.3))
    # a new label set on top of the inflated features
    m5 = build_classifier("resnet18", 3, 1, 5, 28, stem="small", width=8, pretrained=path, inflate="center",
                          skip_head=True)
    assert m5.num_classes == 5 and m5.label_names == [f"class_{i}" for i in range(5)]
    torch.testing.assert_close(m5.backbone.layer4[1].conv2.weight[..., 1], m2.backbone.layer4[1].conv2.weight)


def test_2d_checkpoint_for_3d_model_without_inflate_raises(tmp_path):
    m2, m3 = _pair()
    path = tmp_path / "model2d.pt"
    torch.save(m2.state_dict(), path)
    with pytest.raises(ValueError, match=r"2D checkpoint.*inflate='i3d'") as exc:
        build_classifier("resnet18", 3, 1, 3, 28, stem="small", width=8, pretrained=path)
    assert str(path) in str(exc.value) and "backbone.conv1.weight" in str(exc.value)
    with pytest.raises(ValueError, match="inflate='i3d'"):
        load_weights(m3, path)
    # strict=False loads what fits (norms, head) and keeps the hint in its warning
    report = load_weights(m3, path, strict=False)
    assert ("backbone.conv1.weight", (8, 1, 3, 3), (8, 1, 3, 3, 3)) in report.mismatched_keys


def test_mismatch_that_is_not_inflation_names_key_and_shapes(tmp_path):
    m2, _ = _pair()
    wider = r"backbone\.conv1\.weight: checkpoint \[8, 1, 3, 3\] vs model \[16, 1, 3, 3, 3\]"
    wide = build_classifier("resnet18", 3, 1, 3, 28, stem="small", width=16)
    with pytest.raises(ValueError, match=wider):
        inflate_2d_to_3d(m2.state_dict(), wide, "i3d")
    standard = build_classifier("resnet18", 3, 1, 3, 28, stem="standard", width=8)  # 7x7x7 stem kernel
    stem_kernel = r"backbone\.conv1\.weight: checkpoint \[8, 1, 3, 3\] vs model \[8, 1, 7, 7, 7\]"
    with pytest.raises(ValueError, match=stem_kernel):
        inflate_2d_to_3d(m2.state_dict(), standard, "i3d")
    path = tmp_path / "model2d.pt"
    torch.save(m2.state_dict(), path)
    with pytest.raises(ValueError, match=wider):
        build_classifier("resnet18", 3, 1, 3, 28, stem="small", width=16, pretrained=path, inflate="i3d")
    # strict=False leaves the mis-shaped keys out
    out = inflate_2d_to_3d(m2.state_dict(), standard, "i3d", strict=False)
    assert "backbone.conv1.weight" not in out and out["backbone.layer1.0.conv1.weight"].shape == (8, 8, 3, 3, 3)


def test_other_arch_and_missing_keys_raise():
    m2, _ = _pair()
    r34 = build_classifier("resnet34", 3, 1, 3, 28, stem="small", width=8)
    with pytest.raises(ValueError, match="resnet18 checkpoint.*resnet34"):
        inflate_2d_to_3d(m2.state_dict(), r34)
    state = {k: v for k, v in m2.state_dict().items() if k != "_extra_state"}  # no metadata: keys compared
    with pytest.raises(ValueError, match=r"missing keys \[backbone\.layer1\.2\."):
        inflate_2d_to_3d(state, r34)


def test_stem_mismatch_warns(caplog):
    m2, _ = _pair(stem="small")
    medium = build_classifier("resnet18", 3, 1, 3, 28, stem="medium", width=8)
    with caplog.at_level(logging.WARNING, logger="medclass.networks.inflate"):
        inflate_2d_to_3d(m2.state_dict(), medium)
    assert "stem='small'" in caplog.text and "stem='medium'" in caplog.text


def test_bad_arguments():
    m2, m3 = _pair()
    with pytest.raises(ValueError, match="unknown inflate mode"):
        inflate_2d_to_3d(m2.state_dict(), m3, "tile")
    with pytest.raises(ValueError, match="needs a 3D model"):
        inflate_2d_to_3d(m2.state_dict(), build_classifier("resnet18", 2, 1, 3, 28, width=8))
    with pytest.raises(ValueError, match="conv='acs'"):
        inflate_2d_to_3d(m2.state_dict(), m3, "acs")  # m3 has full 3x3x3 kernels
    vit = build_classifier("vit", 3, 1, 3, 16, hidden_size=24, mlp_dim=48, num_layers=1, num_heads=2)
    with pytest.raises(ValueError, match="densenet"):
        inflate_2d_to_3d({"backbone.x": torch.zeros(1)}, vit)
    with pytest.raises(ValueError, match="3D"):
        build_classifier("resnet18", 2, 1, 3, 28, width=8, pretrained="x.pt", inflate="i3d")
    with pytest.raises(ValueError, match="unknown inflate mode"):
        build_classifier("resnet18", 3, 1, 3, 28, width=8, pretrained="x.pt", inflate="I3D")
    with pytest.raises(ValueError, match="conv='acs'"):
        build_classifier("resnet18", 3, 1, 3, 28, width=8, pretrained="x.pt", inflate="acs")


def test_inflate_without_pretrained_only_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="medclass.networks.factory"):
        m = build_classifier("resnet18", 3, 1, 2, 16, width=4, inflate="i3d")
    assert "inflate='i3d' has no effect without pretrained" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="medclass.networks.factory"):
        build_classifier("resnet18", 3, 1, 2, 16, width=4, pretrained="", inflate="")  # "" = none (bundle configs)
    assert not caplog.text and m.conv == "standard"

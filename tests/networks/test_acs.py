"""ACS convolutions: the operator, the converter, conv="acs" models (shapes, 2D checkpoints, TorchScript, Grad-CAM)."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.visualize import GradCAM

from medclass.networks import ACSConv, Classifier, acs_split, build_classifier, convert_to_acs, load_weights

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:'torch.load' received a zip file that looks like a TorchScript"),
]

SMALL = {
    "resnet18": {"width": 4},
    "resnet34": {"width": 4},
    "densenet121": {"width": 8, "growth_rate": 4, "bn_size": 2},
}


def _shape(size):
    return (size,) * 3 if isinstance(size, int) else tuple(size)


def _reference_weight(conv: ACSConv) -> torch.Tensor:
    """The full 3D kernel an ACSConv stands for: each group's 2D kernel in the centre slice of its flat axis."""
    k = conv.kernel_size[0]
    w = conv.weight.detach()
    full = torch.zeros(*w.shape[:2], k, k, k)
    a, c, _ = acs_split(conv.out_channels)
    full[:a, ..., k // 2] = w[:a]  # axial: (k, k, 1) on (H, W, D)
    full[a : a + c, :, :, k // 2, :] = w[a : a + c]  # coronal: (k, 1, k)
    full[a + c :, :, k // 2, :, :] = w[a + c :]  # sagittal: (1, k, k)
    return full


# ---------------------------------------------------------------- the operator
@pytest.mark.parametrize(
    "k,stride,padding,dilation",
    [(3, 1, 1, 1), (3, 2, 1, 1), (7, 2, 3, 1), (3, 1, 0, 1), (3, 2, 2, 1), (3, 1, 2, 2), (5, (1, 2, 2), (2, 0, 1), 1)],
)
def test_acs_conv_is_conv3d_with_flat_group_kernels(k, stride, padding, dilation):
    torch.manual_seed(0)
    conv = ACSConv(3, 7, k, stride=stride, padding=padding, dilation=dilation, bias=True)
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(2, 3, 11, 12, 13)
    ref = F.conv3d(x, _reference_weight(conv), conv.bias, stride, padding, dilation)
    like = nn.Conv3d(3, 7, k, stride=stride, padding=padding, dilation=dilation)(x)
    with torch.no_grad():
        y = conv(x)
    assert y.shape == ref.shape == like.shape
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)


def test_acs_axial_group_is_the_2d_conv_on_each_slice():
    torch.manual_seed(0)
    conv = ACSConv(2, 6, 3, padding=1)
    conv2d = nn.Conv2d(2, 6, 3, padding=1)
    conv2d.load_state_dict({"weight": conv.weight, "bias": conv.bias})
    x = torch.randn(1, 2, 9, 10, 5)
    a = acs_split(6)[0]
    with torch.no_grad():
        y = conv(x)
        for d in range(5):
            torch.testing.assert_close(y[:, :a, ..., d], conv2d(x[..., d])[:, :a], atol=1e-5, rtol=1e-5)


def test_acs_split_and_few_channels():
    assert acs_split(64) == (22, 21, 21) and acs_split(8) == (3, 3, 2) and acs_split(1) == (1, 0, 0)
    for out in (1, 2):
        y = ACSConv(3, out, 3, padding=1, bias=False)(torch.randn(1, 3, 6, 7, 8))
        assert y.shape == (1, out, 6, 7, 8)


def test_acs_conv_scriptable_and_errors():
    conv = ACSConv(2, 5, 3, stride=2, padding=0, bias=True).eval()
    x = torch.randn(1, 2, 9, 8, 7)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(conv)(x), conv(x))
    assert ACSConv(2, 5, (3, 3), bias=False).weight.shape == (5, 2, 3, 3)
    with pytest.raises(ValueError, match="groups"):
        ACSConv(4, 4, 3, groups=2)
    with pytest.raises(ValueError, match="odd cubic"):
        ACSConv(4, 4, 2)
    with pytest.raises(ValueError, match="odd cubic"):
        ACSConv(4, 4, (3, 3, 1))
    with pytest.raises(ValueError, match="padding"):
        ACSConv(4, 4, 3, padding=-1)


# ---------------------------------------------------------------- converter
def test_convert_to_acs_replaces_kernels_keeps_geometry():
    m = build_classifier("resnet18", 3, 1, 2, 28, stem="standard", width=4)
    before = {n: (c.in_channels, c.out_channels, c.stride, c.padding, c.dilation, c.bias is None)
              for n, c in m.named_modules() if isinstance(c, nn.Conv3d) and max(c.kernel_size) > 1}
    assert m.conv == "standard"
    assert convert_to_acs(m) is m
    assert m.conv == "acs" and Classifier.decode_extra_state(m.state_dict()["_extra_state"])["conv"] == "acs"
    for name, geometry in before.items():
        acs = m.get_submodule(name)
        assert isinstance(acs, ACSConv)
        assert (acs.in_channels, acs.out_channels, acs.stride, acs.padding, acs.dilation, acs.bias is None) == geometry
    assert isinstance(m.backbone.layer2[0].downsample[0], nn.Conv3d)  # 1x1x1 shortcut stays a Conv3d
    assert not any(isinstance(c, nn.Conv3d) and max(c.kernel_size) > 1 for c in m.modules())
    assert m.backbone.conv1.kernel_size == (7, 7, 7) and m.backbone.conv1.weight.shape == (4, 1, 7, 7)


def test_convert_to_acs_errors():
    with pytest.raises(ValueError, match="3D"):
        convert_to_acs(build_classifier("resnet18", 2, 1, 2, 28, width=4))
    vit = build_classifier("vit", 3, 1, 2, 16, hidden_size=24, mlp_dim=48, num_layers=1, num_heads=2)
    with pytest.raises(ValueError, match="vit"):
        convert_to_acs(vit)
    grouped = nn.Module()
    grouped.block = nn.Sequential(nn.Identity(), nn.Conv3d(4, 4, 3, groups=2))
    with pytest.raises(ValueError, match=r"block\.1 to ACS: groups=2"):
        convert_to_acs(grouped)
    flat = nn.Module()
    flat.conv = nn.Conv3d(4, 4, (3, 3, 1))
    with pytest.raises(ValueError, match=r"conv to ACS: kernel_size \(3, 3, 1\)"):
        convert_to_acs(flat)
    with pytest.raises(ValueError, match="conv='acs' is for 3D"):
        build_classifier("resnet18", 2, 1, 2, 28, width=4, conv="acs")
    with pytest.raises(ValueError, match="unknown conv"):
        build_classifier("resnet18", 3, 1, 2, 28, width=4, conv="ACS")


# ---------------------------------------------------------------- conv="acs" models
@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "densenet121"])
@pytest.mark.parametrize("size", [28, 32, (24, 32, 40)])
def test_acs_model_output_shape(arch, size):
    m = build_classifier(arch, 3, 1, 3, size, conv="acs", **SMALL[arch]).eval()
    assert m.conv == "acs" and any(isinstance(c, ACSConv) for c in m.modules())
    with torch.no_grad():
        y = m(torch.randn(2, 1, *_shape(size)))
    assert y.shape == (2, 3) and torch.isfinite(y).all()


@pytest.mark.parametrize("arch", ["resnet18", "densenet121"])
def test_acs_model_torchscript(arch):
    m = build_classifier(arch, 3, 1, 3, 28, conv="acs", label_names=["a", "b", "c"], **SMALL[arch]).eval()
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(m), buf)
    buf.seek(0)
    loaded = torch.jit.load(buf)
    x = torch.randn(1, 1, 28, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), m(x))
    assert list(loaded.label_names) == ["a", "b", "c"] and loaded.conv == "acs"


def test_acs_gradcam_target_layer_and_gradients():
    m = build_classifier("resnet18", 3, 1, 2, 16, conv="acs", width=4)
    assert m.get_target_layer() is m.backbone.layer3
    x = torch.randn(2, 1, 16, 16, 16)
    m.train()
    m(x).sum().backward()
    assert m.backbone.conv1.weight.grad is not None and m.backbone.conv1.weight.grad.abs().sum() > 0
    m.eval()
    cam = GradCAM(nn_module=m, target_layers=m.target_layer)(x, class_idx=1)
    assert cam.shape == (2, 1, 16, 16, 16) and torch.isfinite(cam).all()


@pytest.mark.parametrize("arch", ["resnet18", "densenet121"])
def test_acs_from_2d_checkpoint_loads_one_to_one(tmp_path, arch):
    torch.manual_seed(0)
    kw = SMALL[arch]
    m2 = build_classifier(arch, 2, 1, 3, 28, stem="small", label_names=["a", "b", "c"], thresholds=0.3, **kw)
    with torch.no_grad():
        for p in m2.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path / "model2d.pt"
    torch.save(m2.state_dict(), path)
    with pytest.raises(ValueError, match="inflate='acs'"):  # the 1x1 convolutions are 3D: refused with a hint
        build_classifier(arch, 3, 1, 3, 28, stem="small", conv="acs", pretrained=path, **kw)
    m3 = build_classifier(arch, 3, 1, 3, 28, stem="small", conv="acs", pretrained=path, inflate="acs", **kw)
    own2 = m2.state_dict()
    n_acs = 0
    for name, mod in m3.named_modules():
        if isinstance(mod, ACSConv):
            assert torch.equal(mod.weight, own2[f"{name}.weight"])  # 2D kernels taken 1:1
            n_acs += 1
        elif isinstance(mod, nn.Conv3d):  # 1x1 convolutions: a depth of 1
            assert torch.equal(mod.weight, own2[f"{name}.weight"].unsqueeze(-1))
    assert n_acs > 10
    assert m3.label_names == ["a", "b", "c"]
    torch.testing.assert_close(m3.thresholds, torch.full((3,), 0.3))
    torch.testing.assert_close(m3.get_head().weight, m2.get_head().weight)
    # the stem's axial channels filter each slice as the 2D stem did
    stem = "backbone.conv1" if arch == "resnet18" else "backbone.features.conv0"
    x2 = torch.randn(1, 1, 28, 28)
    a = acs_split(m3.get_submodule(stem).out_channels)[0]
    with torch.no_grad():
        y3 = m3.get_submodule(stem)(x2.unsqueeze(-1).expand(-1, -1, -1, -1, 4))
        y2 = m2.get_submodule(stem)(x2)
    torch.testing.assert_close(y3[:, :a, ..., 2], y2[:, :a], atol=1e-5, rtol=1e-5)
    # i3d/center give the same model (ACS kernels are copied; 1x1 kernels have a depth of 1 in every mode)
    other = build_classifier(arch, 3, 1, 3, 28, stem="small", conv="acs", **kw)
    load_weights(other, path, inflate="i3d")
    assert all(torch.equal(v, m3.state_dict()[k]) for k, v in other.state_dict().items() if "extra" not in k)


def test_acs_checkpoint_round_trip_and_standard_3d_mismatch(tmp_path):
    src = build_classifier("resnet18", 3, 1, 2, 16, conv="acs", width=4).eval()
    path = tmp_path / "acs3d.pt"
    torch.save(src.state_dict(), path)
    dst = build_classifier("resnet18", 3, 1, 2, 16, conv="acs", width=4, pretrained=path).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x))
    with pytest.raises(ValueError, match=r"backbone\.conv1\.weight.*saved from a model with conv='acs'"):
        build_classifier("resnet18", 3, 1, 2, 16, width=4, pretrained=path)
    with pytest.raises(ValueError, match="3D checkpoint with conv='acs', not a 2D one"):
        build_classifier("resnet18", 3, 1, 2, 16, width=4, pretrained=path, inflate="i3d")

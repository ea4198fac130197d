"""build_classifier: every arch x dims x input size gives finite (B, num_classes) logits; stems; ViT patch grid."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from medclass.networks import (
    ARCHS,
    Classifier,
    DenseNetClassifier,
    ResNetClassifier,
    ViTClassifier,
    build_classifier,
    choose_patch_size,
    choose_stem,
)


SIZES_2D = [28, 64, 224, (64, 96)]
SIZES_3D = [28, 32, 64, (24, 32, 40)]

# cheap variants (the matrix is about plumbing: stems, pooling, patch grids); default widths are tested below
SMALL_KW = {
    "densenet": {"width": 8, "growth_rate": 4, "bn_size": 2},
    "resnet": {"width": 4},
    "vit": {"hidden_size": 24, "mlp_dim": 48, "num_layers": 1, "num_heads": 2},
}


def _family(arch: str) -> str:
    return "densenet" if arch.startswith("densenet") else ("resnet" if arch.startswith("resnet") else "vit")


def _shape(size, dims):
    return (size,) * dims if isinstance(size, int) else tuple(size)


def _cases():
    for dims, sizes in ((2, SIZES_2D), (3, SIZES_3D)):
        for arch in ARCHS:
            for size in sizes:
                marks = [pytest.mark.slow] if dims == 3 and size == 64 else []
                yield pytest.param(arch, dims, size, marks=marks, id=f"{arch}-{dims}d-{size}")


@pytest.mark.parametrize("arch,dims,size", list(_cases()))
def test_logits_shape_all_archs_dims_sizes(arch, dims, size):
    model = build_classifier(arch, dims, in_channels=1, num_classes=3, image_size=size, **SMALL_KW[_family(arch)])
    model.eval()
    x = torch.randn(2, 1, *_shape(size, dims))
    with torch.no_grad():
        y = model(x)
    assert isinstance(y, torch.Tensor)
    assert y.shape == (2, 3)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("size", [28, 64])
def test_default_width_2d(arch, size):
    model = build_classifier(arch, 2, in_channels=3, num_classes=2, image_size=size).eval()
    if not arch.startswith("vit"):
        assert model.width == 64
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 2) and torch.isfinite(y).all()


def test_factory_types_and_attributes():
    m = build_classifier("densenet121", 2, 1, 4, 64, **SMALL_KW["densenet"])
    assert isinstance(m, DenseNetClassifier) and isinstance(m, Classifier)
    r = build_classifier("resnet50", 3, 2, 4, (32, 40, 48), **SMALL_KW["resnet"])
    assert isinstance(r, ResNetClassifier)
    assert (r.arch, r.spatial_dims, r.in_channels, r.num_classes, r.image_size) == ("resnet50", 3, 2, 4, (32, 40, 48))
    v = build_classifier("vit", 2, 1, 4, 28, **SMALL_KW["vit"])
    assert isinstance(v, ViTClassifier)
    assert m.label_names == ["class_0", "class_1", "class_2", "class_3"]


# ---------------------------------------------------------------- stems
@pytest.mark.parametrize(
    "size,dims,expected",
    [(28, 2, "small"), (48, 2, "small"), (49, 2, "medium"), (128, 2, "medium"), (129, 2, "standard"),
     ((64, 300), 2, "medium"), (16, 3, "small"), (17, 3, "medium"), (64, 3, "medium"), (65, 3, "standard")],
)
def test_choose_stem(size, dims, expected):
    assert choose_stem(size, dims) == expected


def _layer_shape(model: nn.Module, name: str, x: torch.Tensor) -> tuple[int, ...]:
    out = {}

    def hook(mod, inp, output):
        out["s"] = tuple(output.shape)

    h = model.get_submodule(name).register_forward_hook(hook)
    with torch.no_grad():
        model(x)
    h.remove()
    return out["s"]


@pytest.mark.parametrize("size,stem,stride", [(224, "standard", 4), (64, "medium", 2), (28, "small", 1)])
def test_resnet_auto_stem_stride(size, stem, stride):
    m = build_classifier("resnet18", 2, 1, 2, size, width=8).eval()
    assert m.stem == stem and m.stem_stride == stride
    shape = _layer_shape(m, "backbone.layer1", torch.randn(1, 1, size, size))
    assert shape[2:] == (size // stride, size // stride)


def test_resnet18_224_flops_like_torchvision():
    # torchvision's resnet18 at 224 costs ~1.8 GFLOP (MAC); MONAI's default stride-1 7x7 stem ~14. Count conv MACs.
    m = build_classifier("resnet18", 2, 3, 2, 224).eval()
    macs = []

    def hook(mod, inp, out):
        k = math.prod(mod.kernel_size) * mod.in_channels // mod.groups
        macs.append(k * out.numel())

    hs = [c.register_forward_hook(hook) for c in m.modules() if isinstance(c, nn.Conv2d)]
    with torch.no_grad():
        m(torch.randn(1, 3, 224, 224))
    for h in hs:
        h.remove()
    assert 1.5e9 < sum(macs) < 2.2e9


@pytest.mark.parametrize("size,dims,stride", [(28, 2, 1), (64, 2, 2), (224, 2, 4), (16, 3, 1), (32, 3, 2)])
def test_densenet_auto_stem_stride(size, dims, stride):
    m = build_classifier("densenet121", dims, 1, 2, size, **SMALL_KW["densenet"]).eval()
    assert m.stem_stride == stride
    shape = _layer_shape(m, "backbone.features.denseblock1", torch.randn(1, 1, *(size,) * dims))
    assert shape[2:] == (size // stride,) * dims


def test_explicit_stem_overrides_auto():
    m = build_classifier("resnet18", 2, 1, 2, 224, stem="small", width=4).eval()
    assert _layer_shape(m, "backbone.layer1", torch.randn(1, 1, 64, 64))[2:] == (64, 64)
    assert isinstance(m.backbone.conv1, nn.Conv2d) and m.backbone.conv1.kernel_size == (3, 3)


def test_densenet_too_small_for_standard_stem_raises():
    with pytest.raises(ValueError, match=r"too small.*stem='standard'"):
        build_classifier("densenet121", 2, 1, 2, 28, stem="standard", **SMALL_KW["densenet"])


def test_no_image_size_cnn_uses_standard_stem():
    m = build_classifier("resnet18", 2, 1, 2, width=4)
    assert m.stem == "standard" and m.image_size is None


def test_width_scales_resnet_and_densenet():
    r = build_classifier("resnet18", 2, 1, 2, 64, width=16)
    assert r.backbone.conv1.out_channels == 16 and r.backbone.fc.in_features == 128
    d = build_classifier("densenet121", 2, 1, 2, 64, width=32, growth_rate=4)
    assert d.backbone.features.conv0.out_channels == 32


def test_resnet_layers_override_and_3_channels():
    m = build_classifier("resnet50", 2, 3, 2, 32, width=4, layers=[1, 1, 1, 1])
    assert len(m.backbone.layer3) == 1
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 2)


# ---------------------------------------------------------------- ViT
@pytest.mark.parametrize(
    "size,dims,patch",
    [(28, 2, (4, 4)), (64, 2, (8, 8)), (224, 2, (16, 16)), ((64, 96), 2, (8, 8)), (96, 2, (12, 12)),
     (28, 3, (4, 4, 4)), (64, 3, (8, 8, 8)), ((24, 32, 40), 3, (3, 4, 5))],
)
def test_choose_patch_size(size, dims, patch):
    assert choose_patch_size(size, dims) == patch
    for s, p in zip(_shape(size, dims), patch):
        assert s % p == 0 and 7 <= s // p <= 16


def test_choose_patch_size_prime_side_raises():
    # 37 is prime: patches of 1 (grid 37) or 37 (grid 1) only
    with pytest.raises(ValueError, match="37"):
        choose_patch_size(37, 2)
    assert choose_patch_size(31, 2) == (1, 1)  # grid 31 is still within the 4-32 fallback range


def test_vit_returns_plain_logits_without_tanh():
    m = build_classifier("vit", 2, 1, 2, 28, **SMALL_KW["vit"]).eval()
    assert not any(isinstance(mod, nn.Tanh) for mod in m.modules())
    head = m.get_head()
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([5.0, -3.0]))
        y = m(torch.randn(2, 1, 28, 28))
    assert isinstance(y, torch.Tensor) and not isinstance(y, tuple)
    torch.testing.assert_close(y, torch.tensor([[5.0, -3.0], [5.0, -3.0]]))


def test_vit_grid_non_square_and_tokens():
    m = build_classifier("vit", 2, 1, 3, (64, 96), **SMALL_KW["vit"]).eval()
    assert m.patch_size == (8, 8) and m.grid == (8, 12) and m.num_prefix_tokens == 1
    tokens = _layer_shape(m, m.target_layer, torch.randn(2, 1, 64, 96))
    assert tokens == (2, 1 + 8 * 12, 24)


def test_vit_explicit_patch_size_and_grid_3d():
    m = build_classifier("vit", 3, 1, 2, (32, 48, 16), patch_size=(8, 8, 4), **SMALL_KW["vit"])
    assert m.patch_size == (8, 8, 4) and m.grid == (4, 6, 4)
    assert m(torch.randn(1, 1, 32, 48, 16)).shape == (1, 2)


def test_vit_default_config_sized_for_cpu():
    m = build_classifier("vit", 2, 1, 2, 28)
    assert len(m.backbone.blocks) == 8 and m.num_features == 384
    assert m.backbone.blocks[0].mlp.linear1.out_features == 1536


def test_vit_errors():
    with pytest.raises(ValueError, match="image_size is required"):
        build_classifier("vit", 2, 1, 2)
    with pytest.raises(ValueError, match=r"not divisible by patch_size"):
        build_classifier("vit", 2, 1, 2, (64, 90), patch_size=16, **SMALL_KW["vit"])
    with pytest.raises(ValueError, match="stem"):
        build_classifier("vit", 2, 1, 2, 28, stem="small", **SMALL_KW["vit"])
    with pytest.raises(ValueError, match="hidden_size"):
        build_classifier("vit", 2, 1, 2, 28, width=32)
    m = build_classifier("vit", 2, 1, 2, 28, **SMALL_KW["vit"])
    with pytest.raises(ValueError, match="differs from image_size"):
        m(torch.randn(1, 1, 32, 32))


# ---------------------------------------------------------------- argument checking
@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"arch": "resnet19"}, ValueError, "unknown arch"),
        ({"arch": "resnet18", "spatial_dims": 1}, ValueError, "spatial_dims"),
        ({"arch": "resnet18", "num_classes": 0}, ValueError, "num_classes"),
        ({"arch": "resnet18", "in_channels": 1.5}, ValueError, "in_channels"),
        ({"arch": "resnet18", "image_size": (28, 28, 28)}, ValueError, "image_size"),
        ({"arch": "resnet18", "image_size": "28"}, TypeError, "image_size"),
        ({"arch": "resnet18", "stem": "tiny"}, ValueError, "stem"),
        ({"arch": "resnet18", "width": 0}, ValueError, "width"),
        ({"arch": "resnet18", "dropout": 1.0}, ValueError, "dropout"),
        ({"arch": "resnet18", "n_input_channels": 3}, TypeError, "in_channels"),
        ({"arch": "densenet121", "out_channels": 3}, TypeError, "num_classes"),
        ({"arch": "resnet18", "conv1_t_stride": 2}, TypeError, "stem"),
        ({"arch": "vit", "image_size": 28, "post_activation": "Tanh"}, TypeError, "post_activation"),
        ({"arch": "resnet18", "num_classes": 2, "label_names": ["a"]}, ValueError, "label_names"),
        ({"arch": "resnet18", "num_classes": 2, "label_names": ["a", "a"]}, ValueError, "unique"),
        ({"arch": "resnet18", "num_classes": 2, "thresholds": [0.5, 1.5]}, ValueError, "thresholds"),
        ({"arch": "resnet18", "num_classes": 2, "thresholds": [0.5, 0.5, 0.5]}, ValueError, "thresholds"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    kwargs = {"width": 4, **kwargs} if not kwargs["arch"].startswith("vit") else kwargs
    with pytest.raises(exc, match=match):
        build_classifier(**kwargs)


def test_head_dropout_only_in_training():
    m = build_classifier("resnet18", 2, 1, 2, 28, width=4, dropout=0.5)
    x = torch.randn(2, 1, 28, 28)
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(m(x), m(x))
    feats = m.forward_features(x).detach()
    m.train()
    torch.manual_seed(0)
    dropped = m.forward_head(feats)
    m.eval()
    assert not torch.allclose(dropped, m.forward_head(feats))


def _last_stage(model):
    """The CNN's last stage (what ``dilate_last_stage`` changes): ResNet ``layer4``, DenseNet ``features.norm5``."""
    if hasattr(model.backbone, "layer4"):
        return model.backbone.layer4
    return model.get_submodule("backbone.features.norm5")


@pytest.mark.parametrize(
    "arch,dims,size,kw",
    [
        ("resnet18", 2, 64, {"width": 4}),
        ("resnet50", 2, 64, {"width": 4}),
        ("resnet18", 3, 32, {"width": 4}),
        ("densenet121", 2, 64, SMALL_KW["densenet"]),
        ("densenet121", 3, 32, SMALL_KW["densenet"]),
        ("densenet121", 2, 64, {**SMALL_KW["densenet"], "block_config": (2, 2, 2)}),  # 3 blocks: transition2
    ],
)
def test_dilated_last_stage_doubles_the_last_grid_with_the_same_weights(arch, dims, size, kw):
    torch.manual_seed(0)
    plain = build_classifier(arch, dims, 1, 3, image_size=size, **kw).eval()
    dil = build_classifier(arch, dims, 1, 3, image_size=size, dilate_last_stage=True, **kw).eval()
    assert not plain.dilate_last_stage and dil.dilate_last_stage
    assert {k: v.shape for k, v in plain.state_dict().items() if k != "_extra_state"} == {
        k: v.shape for k, v in dil.state_dict().items() if k != "_extra_state"
    }
    dil.load_state_dict(plain.state_dict(), strict=True)
    grids = {}
    for name, model in (("plain", plain), ("dil", dil)):
        seen = []
        h = _last_stage(model).register_forward_hook(lambda m, i, o, seen=seen: seen.append(tuple(o.shape[2:])))
        x = torch.randn(2, 1, *(size,) * dims)
        logits = model(x)
        h.remove()
        assert logits.shape == (2, 3) and torch.isfinite(logits).all()
        grids[name] = seen[0]
    assert grids["dil"] == tuple(2 * g for g in grids["plain"]), grids
    # only the last stage changed: the first stages compute the same features from the same weights
    if arch.startswith("resnet"):
        pre = "backbone.layer3"
    else:  # the last transition's conv (its pooling is what the dilated variant drops)
        last = [n for n, _ in plain.backbone.features.named_children() if n.startswith("transition")][-1]
        pre = f"backbone.features.{last}.conv"
    outs = []
    for model in (plain, dil):
        h = model.get_submodule(pre).register_forward_hook(lambda m, i, o: outs.append(o))
        with torch.no_grad():
            model(x)
        h.remove()
    torch.testing.assert_close(outs[0], outs[1])


def test_dilated_last_stage_is_recorded_and_a_mismatch_warns(caplog):
    import logging

    plain = build_classifier("resnet18", 2, 1, 2, image_size=64, width=4)
    dil = build_classifier("resnet18", 2, 1, 2, image_size=64, width=4, dilate_last_stage=True)
    assert Classifier.decode_extra_state(dil.state_dict()["_extra_state"])["dilate_last_stage"] is True
    with caplog.at_level(logging.WARNING, logger="medclass.networks.classifier"):
        build_classifier("resnet18", 2, 1, 2, image_size=64, width=4, dilate_last_stage=True).load_state_dict(
            dil.state_dict()
        )
    assert "dilate_last_stage" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="medclass.networks.classifier"):
        dil.load_state_dict(plain.state_dict())
    assert "dilate_last_stage=False" in caplog.text and "dilate_last_stage=True" in caplog.text


def test_dilated_last_stage_errors_and_acs():
    with pytest.raises(ValueError, match="not to arch='vit'"):
        build_classifier("vit", 2, 1, 2, image_size=32, dilate_last_stage=True)
    with pytest.raises(TypeError, match="dilate_last_stage must be True, False or 'auto'"):
        build_classifier("resnet18", 2, 1, 2, image_size=32, dilate_last_stage="yes")
    with pytest.raises(ValueError, match="shortcut_type 'B'"):
        build_classifier("resnet18", 2, 1, 2, image_size=32, width=4, shortcut_type="A", dilate_last_stage=True)
    acs = build_classifier("resnet18", 3, 1, 2, image_size=16, width=4, conv="acs", dilate_last_stage=True)
    seen = []
    acs.backbone.layer4.register_forward_hook(lambda m, i, o, seen=seen: seen.append(tuple(o.shape[2:])))
    assert acs(torch.randn(1, 1, 16, 16, 16)).shape == (1, 2)
    assert seen == [(4, 4, 4)]  # small stem (1) x layer2, layer3 (4), layer4 dilated: 16 / 4 (undilated: 2^3)


@pytest.mark.parametrize(
    "arch,dims,size,expected",
    [
        ("resnet18", 3, 48, True),  # medium stem: 3^3 -> 6^3
        ("resnet18", 3, 28, True),  # 2^3: the centre of the volume could never be the map's peak
        ("resnet18", 3, 64, False),  # 4^3
        ("resnet18", 2, 128, False),  # 8x8
        ("resnet18", 2, 28, False),  # small stem: 4x4
        ("resnet18", 2, (96, 24), True),  # the short side decides: small stem, 3 cells
        ("densenet121", 3, 48, True),
        ("densenet121", 2, 64, False),
        ("vit", 2, 32, False),
    ],
)
def test_dilate_last_stage_auto_follows_the_last_grid(arch, dims, size, expected):
    kw = SMALL_KW[_family(arch)]
    model = build_classifier(arch, dims, 1, 2, image_size=size, dilate_last_stage="auto", **kw)
    assert model.dilate_last_stage is expected
    if arch != "vit":
        grids = []
        for m in (model, build_classifier(arch, dims, 1, 2, image_size=size, dilate_last_stage=False, **kw)):
            seen = []
            h = _last_stage(m).register_forward_hook(lambda mod, i, o, seen=seen: seen.append(min(o.shape[2:])))
            with torch.no_grad():
                m(torch.randn(1, 1, *_shape(size, dims)))
            h.remove()
            grids.append(seen[0])
        auto, plain = grids
        assert (plain < 4) is expected  # dilated exactly where the plain grid is too coarse
        assert auto == (2 * plain if expected else plain)
    if arch != "vit":  # without an image size there is no grid to judge: no dilation
        assert build_classifier(arch, dims, 1, 2, dilate_last_stage="auto", **kw).dilate_last_stage is False

"""Classifier: thresholds/labels in the state_dict, TorchScript, Grad-CAM target layers, head reset."""

from __future__ import annotations

import io
import logging

import pytest
import torch
import torch.nn as nn
from monai.networks.utils import copy_model_state
from monai.visualize import GradCAM

from medclass.networks import Classifier, build_classifier

# TorchScript (used by MONAI bundle export) is deprecated in torch 2.x but still the export path
pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:'torch.load' received a zip file that looks like a TorchScript"),
]

SMALL = {
    "densenet121": {"width": 8, "growth_rate": 4, "bn_size": 2},
    "resnet18": {"width": 4},
    "resnet50": {"width": 4, "layers": [1, 1, 1, 1]},
    "vit": {"hidden_size": 24, "mlp_dim": 48, "num_layers": 2, "num_heads": 2},
}


def _build(arch="resnet18", dims=2, num_classes=3, size=32, **kw):
    return build_classifier(arch, dims, 1, num_classes, size, **{**SMALL[arch], **kw})


# ---------------------------------------------------------------- thresholds / label names
def test_thresholds_buffer_default_and_in_state_dict():
    m = _build()
    assert "thresholds" in dict(m.named_buffers())
    torch.testing.assert_close(m.thresholds, torch.full((3,), 0.5))
    assert "thresholds" in m.state_dict() and "_extra_state" in m.state_dict()


def test_thresholds_and_label_names_round_trip_through_file(tmp_path):
    src = _build(label_names=["effusion", "nodule", "mass"], thresholds=[0.2, 0.35, 0.7])
    path = tmp_path / "w.pt"
    torch.save(src.state_dict(), path)
    state = torch.load(path, weights_only=True)  # plain tensors only
    dst = _build()
    assert dst.label_names == ["class_0", "class_1", "class_2"]
    dst.load_state_dict(state)
    assert dst.label_names == ["effusion", "nodule", "mass"]
    torch.testing.assert_close(dst.thresholds, torch.tensor([0.2, 0.35, 0.7]))
    meta = Classifier.decode_extra_state(state["_extra_state"])
    assert meta["arch"] == "resnet18" and meta["spatial_dims"] == 2 and meta["image_size"] == [32, 32]
    assert meta["label_names"] == ["effusion", "nodule", "mass"]


def test_extra_state_survives_monai_copy_model_state():
    # MONAI's copy_model_state (used by CheckpointLoader(strict_shape=False) and ckpt_export without ignite)
    # reads `.shape` of every state entry: the metadata must be a tensor
    src = _build(label_names=["a", "b", "c"], thresholds=0.3)
    dst = _build(label_names=["x", "y", "z"])
    new_state, changed, _ = copy_model_state(dst, src.state_dict(), inplace=True)
    assert dst.label_names == ["a", "b", "c"]
    torch.testing.assert_close(dst.thresholds, torch.full((3,), 0.3))


def test_extra_state_label_count_mismatch_raises():
    src = _build(num_classes=2)
    dst = _build(num_classes=3)
    state = {"_extra_state": src.state_dict()["_extra_state"]}
    with pytest.raises(ValueError, match="label_names has 2 entries"):
        dst.load_state_dict(state, strict=False)


def test_set_thresholds_validates():
    m = _build()
    m.set_thresholds([0.1, 0.2, 0.3])
    torch.testing.assert_close(m.thresholds, torch.tensor([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="thresholds"):
        m.set_thresholds([0.1, 0.2])
    with pytest.raises(ValueError, match="thresholds"):
        m.set_thresholds(-0.1)


# ---------------------------------------------------------------- TorchScript
@pytest.mark.parametrize("arch,size", [("densenet121", 32), ("resnet18", 32), ("vit", (32, 48))])
def test_torchscript_matches_eager_and_keeps_metadata(arch, size):
    m = _build(arch, size=size, label_names=["a", "b", "c"], thresholds=[0.1, 0.2, 0.3]).eval()
    scripted = torch.jit.script(m)
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    buf.seek(0)
    loaded = torch.jit.load(buf)
    shape = (size, size) if isinstance(size, int) else size
    x = torch.randn(2, 1, *shape)
    with torch.no_grad():
        ref = m(x)
        torch.testing.assert_close(scripted(x), ref)
        torch.testing.assert_close(loaded(x), ref)
    assert list(loaded.label_names) == ["a", "b", "c"]
    torch.testing.assert_close(loaded.thresholds, torch.tensor([0.1, 0.2, 0.3]))
    assert loaded.arch == arch


def test_torchscript_3d_resnet():
    m = _build("resnet18", dims=3, size=16).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(m)(x), m(x))


# ---------------------------------------------------------------- Grad-CAM target layer
@pytest.mark.parametrize("arch,dims", [("densenet121", 2), ("resnet18", 2), ("resnet50", 3), ("densenet121", 3)])
def test_target_layer_has_spatial_output_and_gradcam_runs(arch, dims):
    size = 32 if dims == 2 else 16
    m = _build(arch, dims=dims, size=size).eval()
    layer = m.get_target_layer()
    assert layer is m.get_submodule(m.target_layer)
    seen = {}

    def hook(mod, inp, out):
        seen["shape"] = tuple(out.shape)

    h = layer.register_forward_hook(hook)
    x = torch.randn(2, 1, *(size,) * dims)
    with torch.no_grad():
        m(x)
    h.remove()
    assert len(seen["shape"]) == 2 + dims and seen["shape"][0] == 2 and all(s >= 1 for s in seen["shape"][2:])
    cam = GradCAM(nn_module=m, target_layers=m.target_layer)(x, class_idx=1)
    assert cam.shape == (2, 1, *(size,) * dims) and torch.isfinite(cam).all()


def test_vit_target_layer_is_last_block_norm():
    m = _build("vit", size=28)
    assert (m.patch_size, m.grid, m.num_prefix_tokens) == ((4, 4), (7, 7), 1)
    cnn = _build("resnet18", size=28)
    assert (cnn.patch_size, cnn.grid, cnn.num_prefix_tokens) == (None, None, 0)
    assert m.target_layer == f"backbone.blocks.{len(m.backbone.blocks) - 1}.norm1"
    assert isinstance(m.get_target_layer(), nn.LayerNorm)


# ---------------------------------------------------------------- features / head
@pytest.mark.parametrize("arch", ["densenet121", "resnet18", "vit"])
def test_forward_features_and_head(arch):
    m = _build(arch, size=28).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        f = m.forward_features(x)
        assert f.shape == (2, m.num_features)
        torch.testing.assert_close(m.forward_head(f), m(x))
    assert m.get_head().in_features == m.num_features


@pytest.mark.parametrize("arch", ["densenet121", "resnet18", "vit"])
def test_reset_classifier(arch):
    m = _build(arch, size=28, label_names=["a", "b", "c"], thresholds=0.2)
    feats_before = m.backbone.state_dict()
    m.reset_classifier(5, label_names=list("vwxyz"))
    assert m.num_classes == 5 and m.label_names == list("vwxyz")
    torch.testing.assert_close(m.thresholds, torch.full((5,), 0.5))
    assert m.eval()(torch.randn(1, 1, 28, 28)).shape == (1, 5)
    assert m.get_head().out_features == 5
    after = m.backbone.state_dict()
    kept = [k for k in feats_before if "head" not in k and "fc" not in k and "class_layers" not in k]
    assert kept and all(torch.equal(feats_before[k], after[k]) for k in kept)
    with pytest.raises(ValueError, match="num_classes"):
        m.reset_classifier(0)


# ---------------------------------------------------------------- MONAI bundle export
@pytest.mark.parametrize("nested", [False, True])
def test_monai_bundle_ckpt_export(tmp_path, nested):
    import json

    from monai.bundle import ckpt_export

    net_def = {"_target_": "medclass.networks.build_classifier", "arch": "resnet18", "spatial_dims": 2,
               "in_channels": 1, "num_classes": 3, "image_size": 32, "width": 4}
    config = tmp_path / "inference.json"
    config.write_text(json.dumps({"network_def": net_def}))
    trained = build_classifier("resnet18", 2, 1, 3, 32, width=4, label_names=["a", "b", "c"], thresholds=0.3).eval()
    ckpt = tmp_path / "model.pt"
    torch.save({"model": trained.state_dict()} if nested else trained.state_dict(), ckpt)
    out = tmp_path / "model.ts"
    ckpt_export(net_id="network_def", filepath=str(out), ckpt_file=str(ckpt), config_file=str(config),
                meta_file=str(tmp_path / "absent_metadata.json"), key_in_ckpt="model" if nested else "")
    ts = torch.jit.load(str(out))
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ts(x), trained(x))
    assert list(ts.label_names) == ["a", "b", "c"]
    torch.testing.assert_close(ts.thresholds, torch.full((3,), 0.3))


def test_temperature_buffer_and_checkpoints_from_before_it():
    from medclass.networks import build_classifier

    net = build_classifier("resnet18", 2, 1, 3, image_size=32, width=8)
    assert net.temperature.tolist() == [1.0]
    net.set_temperature(1.7)
    state = net.state_dict()
    assert state["temperature"].tolist() == pytest.approx([1.7])
    fresh = build_classifier("resnet18", 2, 1, 3, image_size=32, width=8)
    fresh.load_state_dict(state)
    assert fresh.temperature.item() == pytest.approx(1.7)
    old = {k: v for k, v in state.items() if k != "temperature"}  # written before temperature scaling existed
    fresh.load_state_dict(old)  # strict: still loads, with no scaling
    assert fresh.temperature.item() == 1.0
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature must be a positive number"):
            net.set_temperature(bad)


def test_stem_mismatch_and_old_medium_stem_weights_are_flagged(caplog):
    """Weights whose stem builds a different network with the same shapes load, but never silently: a small-stem
    checkpoint into a medium-stem model, and a 'medium' checkpoint from before the stride-2 conv (no stem_version),
    each log a warning naming the difference; a checkpoint of today's medium stem loads quietly."""
    from medclass.networks.classifier import STEM_VERSION
    from medclass.networks.classifier import decode_metadata as _decode_state
    from medclass.networks.classifier import encode_metadata as _encode_state

    medium = build_classifier("resnet18", spatial_dims=2, image_size=96, stem="medium")
    small = build_classifier("resnet18", spatial_dims=2, image_size=96, stem="small")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="medclass.networks.classifier"):
        medium.load_state_dict(medium.state_dict())
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    meta = _decode_state(medium.state_dict()["_extra_state"])
    assert meta["stem_version"] == STEM_VERSION

    with caplog.at_level(logging.WARNING, logger="medclass.networks.classifier"):
        medium.load_state_dict(small.state_dict())  # same shapes: loads
    assert "stem='small'" in caplog.text and "stem='medium'" in caplog.text
    caplog.clear()

    old = dict(medium.state_dict())
    old["_extra_state"] = _encode_state({k: v for k, v in meta.items() if k != "stem_version"})
    with caplog.at_level(logging.WARNING, logger="medclass.networks.classifier"):
        medium.load_state_dict(old)
    assert "version-1 'medium' stem" in caplog.text and "retrain" in caplog.text

"""Pretrained sources: weight files written here in each source's on-disk layout load into medclass's MONAI networks
and give the features that network computes from the same tensors (reference nets in ``published.py``)."""

from __future__ import annotations

import json
import struct

import pytest
import torch

from medclass.networks import build_classifier, load_pretrained, load_weights
from medclass.networks.hub import XRV_LABELS
from tests.networks.published import (
    BasicBlock,
    Bottleneck,
    DenseNet,
    RefResNet,
    TimmViT,
    drop_xrv_module,
    old_densenet_keys,
    randomise,
    torchvision_vit_state,
    xrv_module,
)

pytestmark = pytest.mark.filterwarnings("ignore:.*TypedStorage is deprecated")


def _state(model, counters=True):
    return {k: v for k, v in model.state_dict().items() if counters or not k.endswith("num_batches_tracked")}


def _close(a, b, tol=1e-5):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def save_safetensors(state: dict, path) -> None:
    """A ``.safetensors`` file (JSON header + raw float32 data), written without the safetensors package."""
    header, blobs, offset = {}, [], 0
    for k, t in state.items():
        data = t.detach().contiguous().float().numpy().tobytes()
        header[k] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


@pytest.fixture(scope="module")
def tv_resnet18():
    return randomise(RefResNet(BasicBlock, [2, 2, 2, 2]))


def _features(model, x):
    model.eval()
    with torch.no_grad():
        return model.forward_features(x)


@pytest.mark.parametrize("wrap", ["plain", "no_counters", "state_dict+module", "safetensors"])
def test_torchvision_timm_resnet18_same_features(tv_resnet18, tmp_path, wrap):
    state = _state(tv_resnet18, counters=wrap != "no_counters")
    path = tmp_path / "resnet18.pth"
    if wrap == "state_dict+module":  # a DDP-trained checkpoint under a wrapper key
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 90}, path)
    elif wrap == "safetensors":  # timm's model.safetensors
        path = tmp_path / "model.safetensors"
        save_safetensors(_state(tv_resnet18, counters=False), path)
    else:
        torch.save(state, path)
    model = build_classifier("resnet18", 2, 3, 2, stem="standard")
    report = load_pretrained(model, path, fold=False)
    x = torch.randn(2, 3, 48, 48)
    _close(_features(model, x), _features(tv_resnet18, x))
    assert report.layout == "torchvision_resnet"
    assert set(report.reinitialised) >= {"backbone.fc.weight", "backbone.fc.bias"}
    assert "backbone.layer2.0.downsample.0.bias" in report.derived
    assert "backbone.layer1.0.conv1.weight" in report.loaded and "backbone.fc.weight" not in report.loaded
    assert model.pretrained["layout"] == "torchvision_resnet" and not model.pretrained["preprocessing"]["folded"]


def test_resnet50_and_34_cover_every_key(tmp_path):
    for arch, block, layers in (("resnet50", Bottleneck, [3, 4, 6, 3]), ("resnet34", BasicBlock, [3, 4, 6, 3])):
        ref = randomise(RefResNet(block, layers))
        path = tmp_path / f"{arch}.pth"
        torch.save(_state(ref), path)
        model = build_classifier(arch, 2, 3, 5)
        report = load_pretrained(model, path, fold=False)
        n_src = len([k for k in _state(ref) if not k.startswith("fc.")])
        assert len(report.loaded) == n_src
        x = torch.randn(1, 3, 32, 32)
        _close(_features(model, x), _features(ref, x))


def test_grey_images_into_rgb_weights_are_folded_exactly(tv_resnet18, tmp_path):
    """Grey input, ImageNet weights: the summed, normalisation-folded first layer computes what the RGB network
    computes on the grey image repeated to 3 channels and normalised with ImageNet's mean/std (interior pixels)."""
    path = tmp_path / "resnet18.pth"
    torch.save(_state(tv_resnet18), path)
    model = build_classifier("resnet18", 2, 1, 2, 64, stem="standard", pretrained=path).eval()
    pre = model.pretrained["preprocessing"]
    assert pre["folded"] and pre["channels"] == "sum" and pre["mean"] == [0.485, 0.456, 0.406]
    x = torch.randn(2, 1, 64, 64)  # medclass preset output: (x01 - 0.5) / 0.25
    x01 = 0.5 + 0.25 * x
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x_src = (x01.expand(-1, 3, -1, -1) - mean) / std
    with torch.no_grad():
        ours = model.backbone.bn1(model.backbone.conv1(x))
        theirs = tv_resnet18.bn1(tv_resnet18.conv1(x_src))
    _close(ours[..., 2:-2, 2:-2], theirs[..., 2:-2, 2:-2], tol=1e-4)
    assert not torch.allclose(ours[..., :1, :], theirs[..., :1, :], atol=1e-3)  # the border differs (documented)


@pytest.mark.parametrize("old_names", [True, False])
def test_torchvision_densenet121_same_features(tmp_path, old_names):
    ref = randomise(DenseNet())
    state = _state(ref)
    path = tmp_path / "densenet121.pth"
    torch.save(old_densenet_keys(state) if old_names else state, path)
    model = build_classifier("densenet121", 2, 3, 3)
    report = load_pretrained(model, path, fold=False)
    assert report.layout == "torchvision_densenet"
    x = torch.randn(1, 3, 32, 32)
    _close(_features(model, x), _features(ref, x))
    assert "backbone.class_layers.out.weight" in report.reinitialised


@pytest.fixture()
def xrv_file(tmp_path):
    """A TorchXRayVision-style file: ``torch.save`` of the whole DenseNet-121 object of ``torchxrayvision.models``."""
    mod = xrv_module()
    try:
        ref = randomise(mod.DenseNet(in_channels=1, num_classes=18))
        ref.pathologies = list(XRV_LABELS)
        ref.op_threshs = None
        # the name of TorchXRayVision's released densenet121-res224-all file
        path = tmp_path / ("nih-pc-chex-mimic_ch-google-openi-kaggle-densenet121-d121-tw-lr001-rot45-tr15-sc15"
                           "-seed0-best.pt")
        torch.save(ref, path)
        legacy = tmp_path / "legacy.pt"
        torch.save(ref, legacy, _use_new_zipfile_serialization=False)
    finally:
        drop_xrv_module()  # medclass must read the file without TorchXRayVision
    return ref, path, legacy


@pytest.mark.parametrize("fmt", ["zip", "legacy", "state_dict"])
def test_xrv_densenet_label_rows_and_features(xrv_file, tmp_path, fmt):
    ref, path, legacy = xrv_file
    if fmt == "legacy":
        path = legacy
    elif fmt == "state_dict":
        path = tmp_path / "xrv_state.pt"
        torch.save(ref.state_dict(), path)
    labels = ["effusion", "new_finding", "Cardiomegaly", "Pleural Thickening"]
    model = build_classifier("densenet121", 2, 1, 4, label_names=labels, pretrained=path).eval()
    x = torch.randn(2, 1, 32, 32)  # medclass input; TorchXRayVision's is 2048 * x01 - 1024 = 512 * x here
    with torch.no_grad():
        feats = ref.forward_features(512 * x)
        _close(model.forward_features(x), feats, tol=1e-4)
        logits, src = model(x), ref.classifier(feats)
    rows = {"effusion": "Effusion", "Cardiomegaly": "Cardiomegaly", "Pleural Thickening": "Pleural_Thickening"}
    for i, name in enumerate(labels):
        if name in rows:
            _close(logits[:, i], src[:, XRV_LABELS.index(rows[name])], tol=1e-4)
    assert model.pretrained["label_rows"] == rows
    assert model.pretrained["preprocessing"]["value_range"] == [-1024.0, 1024.0]
    new_row = model.backbone.class_layers.out.weight[1]
    assert not any(torch.allclose(new_row, r) for r in ref.classifier.weight)


def test_xrv_skip_head_transfers_no_rows(xrv_file):
    ref, path, _ = xrv_file
    model = build_classifier("densenet121", 2, 1, 2, label_names=["Effusion", "Mass"], pretrained=path,
                             skip_head=True)
    assert model.pretrained["label_rows"] == {}
    assert not torch.allclose(model.backbone.class_layers.out.weight[0], ref.classifier.weight[7])


@pytest.fixture(scope="module")
def timm_vit():
    return randomise(TimmViT(img=32, patch=16))


@pytest.mark.parametrize("layout", ["timm", "torchvision"])
def test_vit_small_same_features(timm_vit, tmp_path, layout):
    state = timm_vit.state_dict()
    if layout == "torchvision":
        state = torchvision_vit_state(state)
    path = tmp_path / "vit.pth"
    torch.save(state, path)
    model = build_classifier("vit_small", 2, 3, 2, 32, patch_size=16)
    report = load_pretrained(model, path, fold=False)
    assert report.layout == f"{layout}_vit"
    x = torch.randn(2, 3, 32, 32)
    _close(_features(model, x), _features(timm_vit, x), tol=1e-4)
    assert all(".norm_cross_attn." in k for k in report.derived)


def test_vit_position_embeddings_resampled_to_another_grid(tmp_path):
    src = randomise(TimmViT(img=64, patch=16, depth=12))  # a 4x4 grid
    path = tmp_path / "vit64.pth"
    torch.save(src.state_dict(), path)
    model = build_classifier("vit_small", 2, 1, 2, 32, patch_size=16, pretrained=path)  # a 2x2 grid
    assert model.backbone.patch_embedding.position_embeddings.shape == (1, 4, 384)
    assert model.pretrained["preprocessing"]["mean"] == [0.5, 0.5, 0.5]  # timm ViT (AugReg) default


@pytest.mark.parametrize("depth,block,layers,shortcut_a", [
    ("resnet10", BasicBlock, [1, 1, 1, 1], False),
    ("resnet18", BasicBlock, [2, 2, 2, 2], True),  # MedicalNet's ResNet-18/34: shortcut A
])
def test_medicalnet_3d_same_features(tmp_path, depth, block, layers, shortcut_a):
    ref = randomise(RefResNet(block, layers, in_ch=1, dims=3, fc=False, shortcut_a=shortcut_a))
    state = {f"module.{k}": v for k, v in ref.state_dict().items()}
    state["module.conv_seg.0.weight"] = torch.randn(2, 512, 1, 1, 1)  # a segmentation head: ignored
    path = tmp_path / f"resnet_{depth[6:]}_23dataset.pth"
    torch.save({"state_dict": state}, path)
    model = build_classifier(depth, 3, 1, 2, pretrained=path).eval()
    x = torch.randn(1, 1, 24, 24, 24)
    _close(_features(model, x), _features(ref, x), tol=1e-4)
    pre = model.pretrained["preprocessing"]
    assert not pre["folded"] and "z-score" in pre["intensity"]
    report = load_pretrained(build_classifier(depth, 3, 1, 2), path)
    assert "backbone.conv_seg.0.weight" not in report.loaded and "conv_seg.0.weight" in report.ignored
    if shortcut_a:
        assert any("shortcut A" in r for r in report.derived.values())


@pytest.mark.parametrize("mode,conv", [("i3d", "standard"), ("acs", "acs")])
def test_imagenet_2d_weights_into_3d_networks(tv_resnet18, tmp_path, mode, conv):
    path = tmp_path / "resnet18.pth"
    torch.save(_state(tv_resnet18), path)
    m2 = build_classifier("resnet18", 2, 1, 2, stem="standard", pretrained=path)
    m3 = build_classifier("resnet18", 3, 1, 2, stem="standard", pretrained=path, inflate=mode, conv=conv)
    w2, w3 = m2.backbone.conv1.weight, m3.backbone.conv1.weight
    if mode == "i3d":
        _close(w3, (w2 / 7).unsqueeze(-1).expand_as(w3))
    else:
        _close(w3, w2)
    _close(m3.backbone.bn1.running_mean, m2.backbone.bn1.running_mean)
    assert m3.pretrained["preprocessing"]["folded"]


def test_medclass_checkpoint_keeps_working_and_carries_the_record(xrv_file, tmp_path):
    _, path, _ = xrv_file
    first = build_classifier("densenet121", 2, 1, 2, label_names=["Effusion", "Mass"], pretrained=path)
    saved = tmp_path / "model.pt"
    torch.save(first.state_dict(), saved)
    again = build_classifier("densenet121", 2, 1, 2, label_names=["a", "b"], pretrained=saved)  # a medclass start
    x = torch.randn(1, 1, 32, 32)
    _close(first.eval()(x), again.eval()(x))
    assert again.label_names == ["Effusion", "Mass"]
    plain = build_classifier("densenet121", 2, 1, 2)  # evaluate/inference: built without pretrained, then loaded
    load_weights(plain, saved)
    assert plain.pretrained["preprocessing"]["value_range"] == [-1024.0, 1024.0]
    assert plain.pretrained["source"].startswith("nih-pc-chex")


def _zeros_like_layout(module_fn):
    """A full-size published state dict of zeros (shapes from a reference built on the meta device)."""
    with torch.device("meta"):
        ref = module_fn()
    return {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in ref.state_dict().items()}


@pytest.mark.parametrize(
    "source", ["timm_vit_b16", "torchvision_vit_b16", "medicalnet_resnet34", "medicalnet_resnet50"]
)
def test_full_size_sources_cover_every_key(tmp_path, source):
    """ViT-B/16 at 224 px and MedicalNet's 3D ResNet-34/50: every model key is loaded, re-initialised (head) or
    derived, and no source key is left over (the mapping is checked on full-size shapes, values are zeros)."""
    if source.endswith("vit_b16"):
        state = _zeros_like_layout(lambda: TimmViT(img=224, patch=16, d=768, depth=12, heads=12, mlp=3072))
        if source.startswith("torchvision"):
            state = torchvision_vit_state(state)
        args = ("vit_base", 2, 1, 2, 224)
    else:
        block, layers = (BasicBlock, [3, 4, 6, 3]) if source.endswith("34") else (Bottleneck, [3, 4, 6, 3])
        state = _zeros_like_layout(lambda: RefResNet(block, layers, in_ch=1, dims=3, fc=False,
                                                     shortcut_a=source.endswith("34")))
        state = {"state_dict": {f"module.{k}": v for k, v in state.items()}}
        args = (source.rsplit("_", 1)[1], 3, 1, 2)
    path = tmp_path / "weights.pth"
    torch.save(state, path)
    model = build_classifier(*args, pretrained=path)
    record = model.pretrained
    own = set(model.state_dict())
    report = load_pretrained(build_classifier(*args), path)
    covered = set(report.loaded) | set(report.reinitialised) | set(report.derived)
    backbone = {k for k in own if k.startswith("backbone.")}
    assert backbone - covered == set() and not report.ignored
    assert record["layout"] == ("medicalnet_resnet" if source.startswith("medicalnet") else source[:-4])

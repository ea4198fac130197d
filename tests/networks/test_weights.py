"""load_weights / read_state_dict: formats, readable errors, skip_head, backbone-only checkpoints."""

from __future__ import annotations

import re

import pytest
import torch
from monai.networks.nets import DenseNet121

from medclass.networks import build_classifier, load_weights, read_state_dict

# TorchScript (used by MONAI bundle export) is deprecated in torch 2.x but still the export path
pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:'torch.load' received a zip file that looks like a TorchScript"),
]


def _resnet(num_classes=3, arch="resnet18", **kw):
    return build_classifier(arch, 2, 1, num_classes, 32, width=4, **kw)


def _same_outputs(a, b, size=32):
    x = torch.randn(2, 1, size, size)
    a.eval()
    b.eval()
    with torch.no_grad():
        return torch.allclose(a(x), b(x))


@pytest.fixture()
def trained(tmp_path):
    """A resnet18 with non-default weights, labels and thresholds saved to a file."""
    m = _resnet(label_names=["a", "b", "c"], thresholds=[0.1, 0.2, 0.3])
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / "model.pt"
    torch.save(m.state_dict(), path)
    return m, path


def test_round_trip(trained):
    src, path = trained
    dst = _resnet()
    assert not _same_outputs(src, dst)
    report = load_weights(dst, path)
    assert report.target == "model" and not report.missing_keys and not report.unexpected_keys
    assert _same_outputs(src, dst)
    assert dst.label_names == ["a", "b", "c"]
    torch.testing.assert_close(dst.thresholds, torch.tensor([0.1, 0.2, 0.3]))


@pytest.mark.parametrize("key", ["model", "state_dict", "network"])
def test_nested_checkpoints(trained, tmp_path, key):
    src, _ = trained
    path = tmp_path / f"nested_{key}.pt"
    torch.save({key: src.state_dict(), "optimizer": {"state": {}, "param_groups": []}, "epoch": 3}, path)
    dst = _resnet()
    load_weights(dst, path)
    assert _same_outputs(src, dst)


def test_ddp_module_prefix(trained, tmp_path):
    src, _ = trained
    path = tmp_path / "ddp.pt"
    torch.save({"model": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)
    dst = _resnet()
    load_weights(dst, path)
    assert _same_outputs(src, dst)


def test_key_mismatch_error_names_file_and_keys(trained):
    _, path = trained  # resnet18 checkpoint into a resnet34: missing blocks
    dst = _resnet(arch="resnet34")
    with pytest.raises(ValueError) as exc:
        load_weights(dst, path)
    msg = str(exc.value)
    assert str(path) in msg
    assert "missing keys" in msg and "backbone.layer1.2.conv1.weight" in msg
    listed = re.search(r"missing keys \[(.*?)\]", msg).group(1).split(", ")
    assert len(listed) == 10 and "more" in msg  # at most 10 listed


def test_unexpected_keys_error(trained, tmp_path):
    src, _ = trained
    state = src.state_dict()
    state["backbone.extra.weight"] = torch.zeros(2)
    path = tmp_path / "extra.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"1 unexpected keys \[backbone\.extra\.weight\]"):
        load_weights(_resnet(), path)


def test_shape_mismatch_error(trained):
    _, path = trained
    dst = _resnet(num_classes=5)
    with pytest.raises(ValueError) as exc:
        load_weights(dst, path)
    msg = str(exc.value)
    assert str(path) in msg and "mis-shaped" in msg
    assert "backbone.fc.weight: checkpoint [3, 32] vs model [5, 32]" in msg
    assert "thresholds" in msg


def test_skip_head_starts_new_label_set(trained):
    src, path = trained
    dst = _resnet(num_classes=5, label_names=list("vwxyz"), thresholds=0.4)
    head_before = {k: v.clone() for k, v in dst.get_head().state_dict().items()}
    report = load_weights(dst, path, skip_head=True)
    assert "backbone.fc.weight" in report.skipped_keys and "thresholds" in report.skipped_keys
    assert dst.label_names == list("vwxyz")
    torch.testing.assert_close(dst.thresholds, torch.full((5,), 0.4))
    for k, v in dst.get_head().state_dict().items():
        assert torch.equal(v, head_before[k])
    x = torch.randn(2, 1, 32, 32)
    src.eval()
    dst.eval()
    with torch.no_grad():
        torch.testing.assert_close(dst.forward_features(x), src.forward_features(x))


def test_strict_false_loads_matching(trained):
    src, path = trained
    dst = _resnet(num_classes=5)
    report = load_weights(dst, path, strict=False)
    assert {k for k, _, _ in report.mismatched_keys} == {"backbone.fc.weight", "backbone.fc.bias", "thresholds"}
    torch.testing.assert_close(dst.backbone.conv1.weight, src.backbone.conv1.weight)


def test_backbone_only_monai_checkpoint(tmp_path):
    net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2, init_features=8, growth_rate=4, bn_size=2)
    path = tmp_path / "monai_densenet.pt"
    torch.save(net.state_dict(), path)
    m = build_classifier("densenet121", 2, 1, 2, 64, stem="standard", width=8, growth_rate=4, bn_size=2)
    report = load_weights(m, path)
    assert report.target == "backbone"
    torch.testing.assert_close(m.backbone.features.conv0.weight, net.features.conv0.weight)
    net.eval()
    m.eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), net(x))
    # a small stem cannot take the 7x7 conv: strict fails naming it, strict=False loads the rest
    small = build_classifier("densenet121", 2, 1, 2, 28, width=8, growth_rate=4, bn_size=2)
    with pytest.raises(ValueError, match="backbone.features.conv0.weight"):
        load_weights(small, path)
    report = load_weights(small, path, strict=False)
    assert [k for k, _, _ in report.mismatched_keys] == ["backbone.features.conv0.weight"]


def test_backbone_only_with_skip_head(tmp_path):
    net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=7, init_features=8, growth_rate=4, bn_size=2)
    path = tmp_path / "monai_densenet7.pt"
    torch.save(net.state_dict(), path)
    m = build_classifier("densenet121", 2, 1, 2, 64, stem="standard", width=8, growth_rate=4, bn_size=2,
                         pretrained=path, skip_head=True)
    torch.testing.assert_close(m.backbone.features.norm5.weight, net.features.norm5.weight)
    assert m.num_classes == 2


def test_build_classifier_pretrained(trained):
    src, path = trained
    dst = _resnet(pretrained=str(path))
    assert _same_outputs(src, dst) and dst.label_names == ["a", "b", "c"]


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_weights(_resnet(), path)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        _resnet(pretrained=path)


@pytest.mark.parametrize("content", [b"hello, not a checkpoint", b""])
def test_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "junk.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="junk.pt"):
        load_weights(_resnet(), path)


def test_unsafe_pickle_rejected(tmp_path):
    path = tmp_path / "unsafe.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "obj": re.compile("x")}, path)
    with pytest.raises(ValueError, match="unsafe.pt.*weights_only"):
        read_state_dict(path)


def test_no_state_dict_inside(tmp_path):
    path = tmp_path / "meta.pt"
    torch.save({"epoch": 3, "best": 0.9}, path)
    with pytest.raises(ValueError, match=r"meta.pt holds no state dict"):
        read_state_dict(path)


def test_torchscript_archive_weights(trained, tmp_path):
    src, _ = trained
    path = tmp_path / "model.ts"
    torch.jit.save(torch.jit.script(src.eval()), path)
    dst = _resnet()
    load_weights(dst, path)
    assert _same_outputs(src, dst)

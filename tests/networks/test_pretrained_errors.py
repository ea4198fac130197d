"""Pretrained sources: corrupt, truncated and wrong-architecture files, and contradicting settings, are errors that
name the file and both values."""

from __future__ import annotations

import re
import sys
import types

import pytest
import torch

from medclass.networks import build_classifier, inspect_pretrained, load_pretrained
from tests.networks.published import BasicBlock, RefResNet, TimmViT, randomise

pytestmark = pytest.mark.filterwarnings("ignore:.*TypedStorage is deprecated")


@pytest.fixture(scope="module")
def r18_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "resnet18-f37072fd.pth"
    torch.save(randomise(RefResNet(BasicBlock, [2, 2, 2, 2])).state_dict(), path)
    return path


def test_corrupt_and_truncated_files_name_the_file(r18_file, tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a checkpoint" * 50)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(r18_file.read_bytes()[: r18_file.stat().st_size // 2])
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    for path in (garbage, truncated, empty):
        with pytest.raises(ValueError, match=re.escape(str(path))):
            build_classifier("resnet18", 2, 1, 2, pretrained=path)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_classifier("resnet18", 2, 1, 2, pretrained=tmp_path / "missing.pth")


def test_truncated_safetensors_names_the_file(tmp_path):
    from tests.networks.test_pretrained_sources import save_safetensors

    path = tmp_path / "model.safetensors"
    save_safetensors({"conv1.weight": torch.randn(64, 3, 7, 7)}, path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match=f"{re.escape(str(path))} is truncated"):
        inspect_pretrained(path)


def test_wrong_architecture_names_both(r18_file, tmp_path):
    r34 = tmp_path / "resnet34.pth"
    torch.save(RefResNet(BasicBlock, [3, 4, 6, 3]).state_dict(), r34)
    with pytest.raises(ValueError, match=r"resnet34 weights .*arch='resnet18' contradicts it"):
        build_classifier("resnet18", 2, 1, 2, pretrained=r34)
    with pytest.raises(ValueError, match=r"resnet18 weights .*arch='densenet121'"):
        build_classifier("densenet121", 2, 1, 2, pretrained=r18_file)
    # a model built by hand with another width: the load refuses it, naming the file and the keys
    with pytest.raises(ValueError, match=re.escape(str(r18_file)) + r".*mis-shaped keys"):
        load_pretrained(build_classifier("resnet18", 2, 1, 2, width=32, stem="standard"), r18_file)


def test_explicit_settings_that_contradict_the_source(r18_file):
    with pytest.raises(ValueError, match=r"width=32 contradicts pretrained .*width 64"):
        build_classifier("resnet18", 2, 1, 2, width=32, pretrained=r18_file)
    with pytest.raises(ValueError, match=r"stem='small' contradicts .*'standard'"):
        build_classifier("resnet18", 2, 1, 2, stem="small", pretrained=r18_file)
    with pytest.raises(ValueError, match=r"stem='auto' picks 'medium' for image_size \[128, 128\].*stem='standard'"):
        build_classifier("resnet18", 2, 1, 2, 128, pretrained=r18_file)
    with pytest.raises(ValueError, match=r"layers=\[1, 1, 1, 1\] contradicts"):
        build_classifier("resnet18", 2, 1, 2, pretrained=r18_file, layers=[1, 1, 1, 1])
    m = build_classifier("resnet18", 2, 1, 2, 224, pretrained=r18_file)  # auto picks 'standard' at 224: fine
    assert (m.width, m.stem) == (64, "standard")


def test_dimensions_and_channels(r18_file, tmp_path):
    with pytest.raises(ValueError, match="2D weights: for a 3D model pass inflate"):
        build_classifier("resnet18", 3, 1, 2, pretrained=r18_file)
    med = tmp_path / "resnet_10.pth"
    torch.save({"state_dict": RefResNet(BasicBlock, [1, 1, 1, 1], in_ch=1, dims=3, fc=False).state_dict()}, med)
    with pytest.raises(ValueError, match="3D weights; spatial_dims=2 contradicts"):
        build_classifier("resnet10", 2, 1, 2, pretrained=med)
    with pytest.raises(ValueError, match=re.escape(str(r18_file)) + ".*3 input channels, the model 2"):
        build_classifier("resnet18", 2, 2, 2, pretrained=r18_file)


def test_vit_settings(tmp_path):
    path = tmp_path / "vit.pth"
    torch.save(TimmViT(img=32, depth=12).state_dict(), path)
    with pytest.raises(ValueError, match=r"vit_small weights .*arch='vit' contradicts it.*'vit_small'"):
        build_classifier("vit", 2, 1, 2, 32, pretrained=path)
    with pytest.raises(ValueError, match=r"patch_size 'auto' picks \[8, 8\] for image_size \[64, 64\].*\[16, 16\]"):
        build_classifier("vit_small", 2, 1, 2, 64, pretrained=path)
    with pytest.raises(ValueError, match=r"vit_small weights .*arch='vit_base'"):
        build_classifier("vit_base", 2, 1, 2, 32, patch_size=16, pretrained=path)


def test_unexpected_or_missing_keys_are_errors(r18_file, tmp_path):
    state = torch.load(r18_file, weights_only=True)
    missing = dict(state)
    del missing["layer3.0.bn2.running_var"]
    p1 = tmp_path / "missing_key.pth"
    torch.save(missing, p1)
    with pytest.raises(ValueError, match=re.escape(str(p1)) + r".*1 model keys it lacks \[layer3\.0\.bn2\.running_var"):
        build_classifier("resnet18", 2, 1, 2, pretrained=p1)
    extra = dict(state, **{"layer4.1.conv9.weight": torch.zeros(512, 512, 3, 3)})
    p2 = tmp_path / "extra_key.pth"
    torch.save(extra, p2)
    with pytest.raises(ValueError, match=re.escape(str(p2)) + r".*keys the model lacks \[layer4\.1\.conv9\.weight"):
        build_classifier("resnet18", 2, 1, 2, pretrained=p2)


def test_unknown_name_and_unknown_layout(tmp_path):
    with pytest.raises(ValueError, match=r"unknown pretrained weights 'torchvision:resnet999'.*torchvision:resnet18"):
        build_classifier("resnet18", 2, 1, 2, pretrained="torchvision:resnet999")
    odd = tmp_path / "odd.pth"
    torch.save({"encoder.weight": torch.zeros(2, 2)}, odd)
    with pytest.raises(ValueError, match=re.escape(str(odd)) + ": unrecognised weight layout"):
        build_classifier("resnet18", 2, 1, 2, pretrained=odd)


class Evil:
    """A class from a module medclass never reads pickles of."""

    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickles_needing_code_are_refused(tmp_path):
    mod = types.ModuleType("evil_pkg")
    Evil.__module__ = "evil_pkg"
    mod.Evil = Evil
    sys.modules["evil_pkg"] = mod
    try:
        path = tmp_path / "evil.pt"
        torch.save({"state_dict": {"a": torch.zeros(1)}, "payload": Evil()}, path)
    finally:
        sys.modules.pop("evil_pkg")
    with pytest.raises(ValueError, match=re.escape(str(path)) + r".*builtins\.print"):
        inspect_pretrained(path)

"""ClassifierSpec: build_classifier's keywords as one checked, typed object; build_classifier is a thin wrapper."""

import dataclasses

import pytest
import torch

from medclass.networks import ClassifierSpec, build, build_classifier


def test_spec_normalises_and_checks_on_construction():
    spec = ClassifierSpec("ResNet18", 3, image_size=32, pretrained="", inflate="", dropout=0)
    assert spec.arch == "resnet18" and spec.image_size == (32, 32, 32)
    assert spec.pretrained is None and spec.inflate is None and spec.dropout == 0.0 and spec.family == "resnet"
    with pytest.raises(ValueError, match="unknown arch"):
        ClassifierSpec("resnet9")
    with pytest.raises(ValueError, match="conv='acs' is for 3D"):
        ClassifierSpec("resnet18", 2, conv="acs")
    with pytest.raises(ValueError, match="freeze must be"):
        ClassifierSpec("resnet18", freeze="half")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.arch = "vit"


def test_build_of_a_spec_is_build_classifier():
    torch.manual_seed(0)
    a = build_classifier("resnet18", 2, 1, 3, (32, 32), width=8, label_names=["a", "b", "c"], layers=[1, 1, 1, 1])
    torch.manual_seed(0)
    b = build(ClassifierSpec("resnet18", 2, 1, 3, (32, 32), width=8, label_names=["a", "b", "c"],
                             arch_kwargs={"layers": [1, 1, 1, 1]}))
    assert a.describe() == b.describe()
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)

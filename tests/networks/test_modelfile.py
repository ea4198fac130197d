"""medclass.networks.modelfile without a bundle: the record of a built model, what resolves to the same model,
and refusals that name both values."""

from __future__ import annotations

import pytest
import torch

from medclass.errors import SettingError
from medclass.networks import build_classifier, check_given, model_settings, read_model_record


@pytest.fixture
def vit_file(tmp_path):
    net = build_classifier("vit", 2, 1, 2, [32, 32], label_names=["a", "b"], hidden_size=32, num_heads=2,
                           num_layers=1, settings={"task": "multilabel", "preset": "generic", "preset_options": {}})
    torch.save(net.state_dict(), tmp_path / "vit.pt")
    return tmp_path / "vit.pt"


def test_a_vit_records_its_sizes_and_rebuilds_from_them(vit_file):
    record = read_model_record(vit_file)
    assert {k: record[k] for k in ("arch", "patch_size", "hidden_size", "num_heads", "num_layers", "stem", "width")} \
        == {"arch": "vit", "patch_size": [4, 4], "hidden_size": 32, "num_heads": 2, "num_layers": 1, "stem": "auto",
            "width": None}
    assert record["missing"] == []
    keys = ("arch", "spatial_dims", "in_channels", "image_size", "label_names", "patch_size", "hidden_size",
            "num_heads", "num_layers")
    args = {k: record[k] for k in keys}
    again = build_classifier(num_classes=len(args.pop("label_names")), label_names=record["label_names"], **args)
    again.load_state_dict(torch.load(vit_file, weights_only=True))  # same shapes: strict load passes


def test_values_that_resolve_to_the_recorded_model_are_not_contradictions(tmp_path):
    net = build_classifier("resnet18", 2, 1, 1, [64, 64])  # width None -> 64, stem auto -> medium
    torch.save(net.state_dict(), tmp_path / "m.pt")
    model = model_settings(tmp_path / "m.pt", {})
    assert model["width"] == 64 and model["stem"] == "medium"
    check_given(model, {"width": None, "stem": "auto", "image_size": 64, "dilate_last_stage": "auto",
                        "patch_size": "auto", "hidden_size": "null", "arch": "ResNet18"})
    with pytest.raises(SettingError, match=r"setting stem: 'small' contradicts 'medium' recorded in the model file"):
        check_given(model, {"stem": "small"})
    with pytest.raises(SettingError, match=r"setting width: 'null' contradicts 32 recorded"):
        check_given({**model, "width": 32}, {"width": "null"})
    check_given(model_settings(tmp_path / "absent.pt", {"width": 8}), {"width": 16})  # no model file: no check


def test_a_model_file_is_loaded_once_until_it_is_replaced(tmp_path, monkeypatch):
    import medclass.networks.modelfile as modelfile
    from medclass.files import atomic_save
    from medclass.networks import build_classifier, read_model_record

    loads = []
    read = modelfile.read_state_dict
    monkeypatch.setattr(modelfile, "read_state_dict", lambda p: loads.append(p) or read(p))
    model = build_classifier("resnet18", 2, 1, 2, image_size=(32, 32), width=4)
    path = tmp_path / "model.pt"
    atomic_save(model.state_dict(), path)
    first = read_model_record(path)
    first["thresholds"].append(1.0)  # a caller's change does not reach the next caller
    assert read_model_record(path)["thresholds"] == [0.5, 0.5] and len(loads) == 1
    model.set_thresholds(0.25)
    atomic_save(model.state_dict(), path)  # evaluate replaces the file: read again
    assert read_model_record(path)["thresholds"] == [0.25, 0.25] and len(loads) == 2

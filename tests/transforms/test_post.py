"""Probabilitiesd: sigmoid/softmax of logits divided by the temperature stored in the (wrapped) model."""

import pytest
import torch

from medclass.transforms import Probabilitiesd


class _Net(torch.nn.Module):
    def __init__(self, t: float) -> None:
        super().__init__()
        self.register_buffer("temperature", torch.tensor([t]))


class _Wrapped(torch.nn.Module):  # like DistributedDataParallel: the model under .module
    def __init__(self, module) -> None:
        super().__init__()
        self.module = module


def test_probabilities_use_the_temperature_read_at_call_time():
    logits = torch.tensor([2.0, -1.0, 0.0])
    net = _Net(1.0)
    t = Probabilitiesd("pred", task="multilabel", network=_Wrapped(net))
    assert torch.allclose(t({"pred": logits})["pred"], torch.sigmoid(logits))
    net.temperature.fill_(2.0)  # e.g. a checkpoint loaded when the engine starts
    assert torch.allclose(t({"pred": logits})["pred"], torch.sigmoid(logits / 2))
    mc = Probabilitiesd("pred", task="multiclass", network=net)({"pred": logits})["pred"]
    assert torch.allclose(mc, torch.softmax(logits / 2, dim=0)) and mc.sum().item() == pytest.approx(1.0)
    batch = Probabilitiesd("pred", task="multiclass")({"pred": logits.repeat(4, 1)})["pred"]
    assert torch.allclose(batch.sum(dim=1), torch.ones(4))
    with pytest.raises(ValueError, match="task must be"):
        Probabilitiesd("pred", task="regression")

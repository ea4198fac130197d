"""Post-processing: logits to probabilities, with the temperature stored in the model."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.transforms import MapTransform

from medclass.networks.ensemble import logits_to_probabilities
from medclass.vocab import TASKS, unwrap_model


class Probabilitiesd(MapTransform):
    """Sigmoid (multi-label/binary) or softmax (multi-class) of ``logits / temperature``.

    The temperature is read from ``network.temperature`` (the buffer the evaluate workflow fits on the
    validation split, 1.0 otherwise) each time the transform runs, so a checkpoint loaded when the engine starts
    is honoured.

    Args:
        keys: keys of the logits: ``(C,)`` per decollated item or ``(B, C)``.
        task: ``multilabel``, ``binary`` or ``multiclass``.
        network: the model (DDP-wrapped or not) carrying ``temperature``; ``None``: no scaling.
        allow_missing_keys: as in MONAI.
    """

    def __init__(self, keys: Hashable | Sequence[Hashable], task: str = "multilabel",
                 network: torch.nn.Module | None = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if task not in TASKS:
            raise ValueError(f"task must be multilabel, binary or multiclass, got {task!r}")
        self.task = task
        self.network = network

    def temperature(self) -> float:
        t = getattr(unwrap_model(self.network), "temperature", None) if self.network is not None else None
        return float(t.reshape(-1)[0]) if isinstance(t, torch.Tensor) else 1.0

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        temperature = self.temperature()
        for key in self.key_iterator(d):
            d[key] = logits_to_probabilities(torch.as_tensor(d[key]).float() / temperature, self.task == "multiclass")
        return d

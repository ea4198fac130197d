"""Run an exported model where the workflows run a PyTorch network: ONNX Runtime behind the ``nn.Module`` interface.

:class:`OnnxModel` wraps an ``onnxruntime.InferenceSession`` of a file written by ``medclass export --format onnx``
as a ``torch.nn.Module``: the MONAI evaluator calls it like the network (tensor in, logits tensor out), and it
carries what the workflows read from a medclass network (``label_names``, ``thresholds``, ``temperature``,
``task``), taken from the metadata inside the ONNX file. :func:`inference_network` is what the bundle's
``network`` item calls with the ``backend`` setting (``torch`` | ``onnxruntime``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from medclass.errors import SettingError
from medclass.networks.ensemble import Ensemble
from medclass.networks.modelfile import read_model_record

logger = logging.getLogger(__name__)

__all__ = ["BACKENDS", "METADATA_KEY", "OnnxModel", "as_saved", "check_backend", "exported_file", "inference_network"]

#: where the inference workflow runs the model: PyTorch (model.pt) or ONNX Runtime (an ONNX export of it)
BACKENDS: tuple[str, ...] = ("torch", "onnxruntime")
#: the ONNX ``metadata_props`` key of the JSON metadata medclass writes into an export
METADATA_KEY = "medclass"


def check_backend(backend: Any) -> str:
    """``backend`` when it is one of :data:`BACKENDS`.

    Raises:
        SettingError: any other value, in one sentence.
    """
    if backend not in BACKENDS:
        raise SettingError(f"setting backend: expected one of {', '.join(BACKENDS)}, got {backend!r}; set it in "
                           "configs/common.yaml or on the command line, e.g. --backend onnxruntime")
    return backend


class OnnxModel(torch.nn.Module):
    """An ONNX export of a medclass model, run on ONNX Runtime (CPU), called like the PyTorch network.

    Args:
        path: an ``.onnx`` file written by ``medclass export`` (its ``medclass`` metadata is required).
        num_threads: ONNX Runtime intra-op threads; ``None``: its default (all cores).
        providers: ONNX Runtime execution providers; default ``["CPUExecutionProvider"]``.

    Attributes:
        metadata: the export's metadata (see :mod:`medclass.exports`).
        label_names, task, num_classes, spatial_dims, in_channels, image_size: from the metadata.
        thresholds, temperature: buffers, as on :class:`medclass.networks.Classifier`.

    Raises:
        FileNotFoundError: no such file.
        ImportError: onnxruntime is not installed (``pip install "medclass[onnx]"``).
        ValueError: the file is not a medclass ONNX export.
    """

    def __init__(self, path: str | os.PathLike, num_threads: int | None = None,
                 providers: list[str] | None = None) -> None:
        super().__init__()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX file (write one with `medclass export MODEL --format onnx "
                                    f"--out {path}`)")
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ImportError("running an ONNX model needs onnxruntime: pip install \"medclass[onnx]\"") from exc
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if num_threads:
            opts.intra_op_num_threads = int(num_threads)
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts,
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
            raise ValueError(f"{path}: ONNX Runtime cannot load it: {str(exc).splitlines()[0]}") from exc
        text = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if not text:
            raise ValueError(f"{path}: carries no medclass metadata (export the model with `medclass export`)")
        self.path = path
        self.metadata: dict[str, Any] = json.loads(text)
        self.label_names = list(self.metadata["label_names"])
        self.task = self.metadata.get("task", "multilabel")
        self.num_classes = len(self.label_names)
        pre = self.metadata.get("preprocessing") or {}
        self.spatial_dims = pre.get("spatial_dims")
        self.in_channels = pre.get("in_channels")
        self.image_size = tuple(pre["image_size"]) if pre.get("image_size") else None
        self.register_buffer("thresholds", torch.tensor(self.metadata["thresholds"], dtype=torch.float32))
        self.register_buffer("temperature", torch.tensor([float(self.metadata.get("temperature", 1.0))]))
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` (float32, on ``x``'s device) of a preprocessed batch ``(B, C, *size)``."""
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        out = self.session.run(None, {self.input_name: arr})[0]
        return torch.from_numpy(out).to(x.device)

    def extra_repr(self) -> str:
        return f"path={self.path}, labels={self.label_names}"


def exported_file(model_path: str | os.PathLike) -> Path:
    """The ONNX file backend ``onnxruntime`` runs: ``model_path`` itself when it is an ``.onnx`` file, else the
    ``.onnx`` file beside it (``models/model.pt`` -> ``models/model.onnx``, where ``medclass export`` writes it)."""
    path = Path(model_path)
    return path if path.suffix.lower() == ".onnx" else path.with_suffix(".onnx")


def as_saved(network: torch.nn.Module, model_path: str | os.PathLike | None, task: str | None = None,
             workflow: str = "inference") -> torch.nn.Module:
    """``network`` shaped as the model file at ``model_path`` holds it: an :class:`medclass.networks.Ensemble` of k
    copies of it where the file records an ensemble of k members (the checkpoint loader then loads every member),
    else ``network`` itself. Training always gets ``network`` (its members are trained one by one)."""
    if workflow == "train" or model_path is None or not Path(model_path).is_file() or \
            Path(model_path).suffix.lower() == ".onnx":
        return network
    info = read_model_record(model_path).get("ensemble")
    if not isinstance(info, dict):
        return network
    logger.info("%s is an ensemble of %s members (by %s)", model_path, info.get("members"), info.get("by"))
    return Ensemble.replicate(network, int(info["members"]), task=task)


def inference_network(backend: str, network: torch.nn.Module, device: torch.device | str,
                      model_path: str | os.PathLike | None = None, task: str | None = None,
                      workflow: str = "inference") -> torch.nn.Module:
    """The network a workflow runs: ``network`` on ``device`` (backend ``torch``; the checkpoint loader loads
    ``model_path`` into it), or the ONNX export of the model on ONNX Runtime (backend ``onnxruntime``, the inference
    workflow only; see :func:`exported_file`), which carries its own labels, thresholds and temperature. A model file
    holding an ensemble makes ``network`` an ensemble of that many members (:func:`as_saved`).

    Raises:
        SettingError: an unknown backend, onnxruntime for a workflow other than inference, or an export whose task
            differs from the bundle's.
        FileNotFoundError: backend onnxruntime and no ONNX file.
    """
    if check_backend(backend) == "torch":
        return as_saved(network, model_path, task, workflow).to(device)
    if workflow != "inference":
        raise SettingError(f"setting backend: onnxruntime runs the inference workflow only (this is {workflow}, which "
                           "needs the PyTorch model); use --backend torch")
    onnx_file = exported_file(model_path) if model_path is not None else None
    if onnx_file is None or not onnx_file.is_file():
        source = Path(model_path).with_suffix(".pt") if model_path is not None else "MODEL.pt"
        raise FileNotFoundError(f"{onnx_file}: backend onnxruntime runs an ONNX export of the model; write it with "
                                f"`medclass export {source} --format onnx --out {onnx_file}`")
    model = OnnxModel(onnx_file)
    if task is not None and model.task != task:
        raise SettingError(f"{onnx_file} was exported for task {model.task!r}, the bundle says {task!r}")
    logger.info("inference on ONNX Runtime: %s", onnx_file)
    return model

"""Reading checkpoint files safely: state dicts, nested containers, TorchScript archives and pickled whole models.

Everything is read with ``torch.load(..., weights_only=True)``: no code from a file ever runs. Files that pickle a
whole ``nn.Module`` (``torch.save(model)``, e.g. TorchXRayVision's DenseNet weights) name their classes
(``torchxrayvision.models.DenseNet``, ``torch.nn.modules.conv.Conv2d``, ...); those names are bound to
:class:`PickledObject`, an inert record of the pickled attributes, so that the module tree's parameters and buffers
can be read back as a state dict without importing (or trusting) the library that wrote the file.

Shared by :mod:`medclass.networks.weights`, :mod:`medclass.networks.inflate` and
:mod:`medclass.networks.pretrained`.
"""

from __future__ import annotations

import _compat_pickle
import io
import json
import logging
import math
import os
import pickle
import pickletools
import types
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

__all__ = ["PickledObject", "load_checkpoint_object", "read_safetensors", "read_state_dict"]

_NESTED_KEYS = ("model", "state_dict", "network", "net")
_STRIP_PREFIXES = ("module.", "_orig_mod.")  # DDP / DataParallel, torch.compile
MODEL_LEVEL_KEYS = ("thresholds", "temperature", "_extra_state")
_MAX_LISTED = 10

# modules whose pickled classes may be read back as inert records (whole pickled models); anything else is refused
_PICKLED_MODULE_PREFIXES = ("torch.nn.modules.", "torch.nn.backends.", "torchxrayvision.", "torchvision.models.",
                            "timm.models.", "monai.networks.", "numpy.", "__main__.")


class PickledObject:
    """Inert stand-in for a class named in a pickled model: it records what the pickle gives it, runs nothing.

    Attributes:
        args: positional arguments the pickle passed when creating the object.
        state: the object's pickled ``__dict__`` (for an ``nn.Module``: ``_parameters``, ``_buffers``,
            ``_modules`` and plain attributes).
    """

    pickled_name = "?"
    args: tuple = ()
    state: dict = {}  # noqa: RUF012 - replaced (never mutated) by __setstate__

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)):
            state = {**(state[0] or {}), **(state[1] or {})}  # (dict, slots) form
        self.state = dict(state) if isinstance(state, Mapping) else {"_state": state}

    def __repr__(self) -> str:
        return f"PickledObject({self.pickled_name})"

    def is_module(self) -> bool:
        """Whether this records a pickled ``nn.Module`` (it has ``_parameters`` / ``_modules``)."""
        return "_parameters" in self.state or "_modules" in self.state

    def state_dict(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Parameters and persistent buffers of the recorded module tree, named as ``nn.Module.state_dict`` names
        them (``features.conv0.weight``, ...)."""
        out: dict[str, torch.Tensor] = {}
        for name, p in (self.state.get("_parameters") or {}).items():
            if isinstance(p, torch.Tensor):
                out[prefix + name] = p.detach()
        skip = set(self.state.get("_non_persistent_buffers_set") or ())
        for name, b in (self.state.get("_buffers") or {}).items():
            if isinstance(b, torch.Tensor) and name not in skip:
                out[prefix + name] = b
        for name, child in (self.state.get("_modules") or {}).items():
            if isinstance(child, PickledObject):
                out.update(child.state_dict(f"{prefix}{name}."))
        return out

    def attributes(self) -> dict[str, Any]:
        """Plain (non-module, non-tensor-dict) attributes of the record, e.g. ``pathologies`` of a pickled model."""
        return {k: v for k, v in self.state.items() if not k.startswith("_")}


def _stub_for(name: str) -> type[PickledObject]:
    return type(name.rpartition(".")[2] or "Pickled", (PickledObject,), {"pickled_name": name})


def _pickle_globals(data: bytes | io.BufferedIOBase, count: int = 1) -> set[str]:
    """``module.name`` of every GLOBAL / STACK_GLOBAL opcode in ``count`` consecutive pickles (read, not run)."""
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    found: set[str] = set()
    for _ in range(count):
        strings: list[str] = []
        for op, arg, _pos in pickletools.genops(stream):
            if op.name == "GLOBAL":
                module, _, name = str(arg).partition(" ")
                # protocol-2 pickles use Python 2 names (__builtin__.set): read them as pickle does
                if (module, name) in _compat_pickle.NAME_MAPPING:
                    module, name = _compat_pickle.NAME_MAPPING[(module, name)]
                module = _compat_pickle.IMPORT_MAPPING.get(module, module)
                found.add(f"{module}.{name}")
            elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                strings.append(str(arg))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.add(f"{strings[-2]}.{strings[-1]}")
    return found


def _unknown_globals(path: Path) -> set[str]:
    """Globals named in a checkpoint file (zip or legacy format) that ``weights_only`` does not allow by default."""
    if zipfile.is_zipfile(path):
        return set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    with open(path, "rb") as f:  # legacy format: magic number, protocol, sys info, then the object
        names = _pickle_globals(f, count=4)
    allowed = set(torch._weights_only_unpickler._get_allowed_globals())  # noqa: SLF001 - torch's own allowlist
    return {n for n in names if n not in allowed}


def _load_pickled_model(path: Path, first_error: Exception) -> Any:
    """Load a file that pickles whole modules, binding their class names to :class:`PickledObject` records."""
    try:
        names = _unknown_globals(path)
    except Exception as e:  # noqa: BLE001 - unreadable pickle: report the original failure
        raise ValueError(f"{path} is not a PyTorch checkpoint readable with weights_only=True: {first_error}") from e
    refused = sorted(n for n in names if not n.startswith(_PICKLED_MODULE_PREFIXES))
    if refused or not names:
        raise ValueError(
            f"{path} is not a PyTorch checkpoint readable with weights_only=True: it needs "
            f"{', '.join(refused) or 'unknown globals'}, which medclass does not read (only tensors, containers and "
            f"pickled modules of {', '.join(p.rstrip('.') for p in _PICKLED_MODULE_PREFIXES)}); first error: "
            f"{first_error}"
        )
    stubs = {n: _stub_for(n) for n in sorted(names)}
    try:
        if zipfile.is_zipfile(path):
            with torch.serialization.safe_globals([(cls, n) for n, cls in stubs.items()]):
                obj = torch.load(path, map_location="cpu", weights_only=True)
        else:
            obj = _load_legacy_pickled_model(path, stubs)
    except Exception as e:  # noqa: BLE001 - anything here means "not a readable pickled model"
        raise ValueError(f"{path} pickles a model that cannot be read with weights_only=True: {e}") from e
    logger.info("read %s as a pickled model (%d classes recorded, none imported or run)", path, len(names))
    return obj


class _RestrictedUnpickler(pickle.Unpickler):
    """A pickle reader that resolves exactly the globals ``weights_only`` allows plus inert stubs; nothing else."""

    allowed: dict[str, Any] = {}  # noqa: RUF012 - set per subclass

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _compat_pickle.NAME_MAPPING:  # Python 2 names of protocol-2 pickles, as pickle does
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        obj = self.allowed.get(f"{module}.{name}")
        if obj is None:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return obj


def _load_legacy_pickled_model(path: Path, stubs: dict[str, type]) -> Any:
    """A whole model pickled in torch's pre-1.6 (non-zip) format.

    ``weights_only=True`` refuses these files outright: they record each module class's source code as a persistent
    id. They are read through torch's own legacy reader with a pickle module whose unpickler resolves only the
    globals ``weights_only`` allows (:func:`torch._weights_only_unpickler._get_allowed_globals`) and the inert
    :class:`PickledObject` stubs, so the same set of callables is reachable as with ``weights_only=True``.
    """
    allowed = dict(torch._weights_only_unpickler._get_allowed_globals())  # noqa: SLF001 - torch's own allowlist
    allowed.update(stubs)
    unpickler = type("Unpickler", (_RestrictedUnpickler,), {"allowed": allowed})
    module = types.SimpleNamespace(
        __name__="medclass_restricted_pickle", Unpickler=unpickler,
        load=lambda f, **kw: unpickler(f, **kw).load(),
    )
    with warnings.catch_warnings():  # "couldn't retrieve source code" of the stubs: expected
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=module)


_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (1 << 27)


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file (a JSON header and raw little-endian data: no pickle, no code), read
    without the ``safetensors`` package.

    Raises:
        ValueError: a truncated file, a malformed header or an unknown dtype (the message names the file).
    """
    p = Path(path)
    data = p.read_bytes()
    try:
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{p} is not a safetensors file: unreadable header ({e})") from e
    body = memoryview(data)[8 + n :]
    out: dict[str, torch.Tensor] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _SAFETENSORS_DTYPES[info["dtype"]]
            start, end = (int(v) for v in info["data_offsets"])
            shape = [int(s) for s in info["shape"]]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{p}: tensor {name!r} has an unsupported or malformed header entry {info!r}") from e
        if end > len(body) or start > end:
            raise ValueError(f"{p} is truncated: tensor {name!r} ends at byte {end}, the data has {len(body)}")
        t = torch.frombuffer(bytearray(body[start:end]), dtype=dtype) if end > start else torch.empty(0, dtype=dtype)
        if t.numel() != math.prod(shape):
            raise ValueError(f"{p}: tensor {name!r} has {t.numel()} values for shape {shape}")
        out[name] = t.reshape(shape)
    return out


def load_checkpoint_object(path: str | os.PathLike) -> Any:
    """The object stored in a checkpoint file, read with ``weights_only=True`` on CPU.

    Pickled whole models come back as :class:`PickledObject` trees, TorchScript archives as their state dict and
    ``.safetensors`` files (recognised by content) as their tensors (:func:`read_safetensors`).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the path is not a file, or the file is empty, truncated, corrupt or needs code to load.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"checkpoint file not found: {p}")
    if not p.is_file():
        raise ValueError(f"checkpoint path is not a file: {p}")
    if _is_safetensors(p):
        return read_safetensors(p)
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except RuntimeError as e:
        if "TorchScript" not in str(e):
            raise ValueError(f"{p} is not a PyTorch checkpoint readable with weights_only=True: {e}") from e
        try:
            obj = torch.jit.load(str(p), map_location="cpu").state_dict()
        except Exception as e2:  # noqa: BLE001 - any failure means "not a usable archive"
            raise ValueError(f"{p} looks like a TorchScript archive but cannot be loaded: {e2}") from e2
        logger.info("read the parameters of TorchScript archive %s", p)
        return obj
    except Exception as e:  # noqa: BLE001 - pickle/zip/EOF/... errors all mean "not a checkpoint"
        if "Unsupported global" in str(e) or "Can only" in str(e):
            return _load_pickled_model(p, e)
        raise ValueError(
            f"{p} is not a PyTorch checkpoint readable with weights_only=True: {type(e).__name__}: {e}"
        ) from e


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and (isinstance(v, torch.Tensor) or k.endswith("_extra_state")) for k, v in obj.items()
    )


def read_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Read a state dict from a checkpoint file (safely: ``weights_only=True``, on CPU).

    Accepts a raw ``state_dict``, one nested under ``"model"``/``"state_dict"``/``"network"``/``"net"``
    (e.g. MONAI ``CheckpointSaver`` or Lightning files), a TorchScript archive (its parameters and buffers) or a
    pickled whole model (its parameters and buffers, see :class:`PickledObject`). ``"module."`` (DDP) and
    ``"_orig_mod."`` (``torch.compile``) prefixes are stripped.

    Args:
        path: checkpoint file.

    Returns:
        The state dict (keys as saved, minus the stripped prefixes).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable checkpoint or holds no state dict.
    """
    p = Path(path).expanduser()
    return unwrap_state_dict(load_checkpoint_object(p), str(p))


def unwrap_state_dict(obj: Any, source: str) -> dict[str, Any]:
    """The state dict in a loaded checkpoint object (nested keys unwrapped, DDP/compile prefixes stripped)."""
    for _ in range(3):  # unwrap up to a few levels of nesting
        if isinstance(obj, PickledObject) and obj.is_module():
            obj = obj.state_dict()
        if _is_state_dict(obj):
            break
        if isinstance(obj, Mapping):
            nested = next(
                (obj[k] for k in _NESTED_KEYS if k in obj and isinstance(obj[k], (Mapping, PickledObject))), None
            )
            if nested is not None:
                obj = nested
                continue
        break
    if not _is_state_dict(obj):
        if isinstance(obj, Mapping):
            what = f"a dict with keys {sorted(map(str, obj))[:_MAX_LISTED]}"
        else:
            what = repr(obj) if isinstance(obj, PickledObject) else type(obj).__name__
        raise ValueError(
            f"{source} holds no state dict (found {what}); expected a state_dict or one under "
            f"{'/'.join(repr(k) for k in _NESTED_KEYS)}"
        )
    state = dict(obj)
    for prefix in _STRIP_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def state_and_source(checkpoint: Any) -> tuple[str, dict]:
    """``(name for messages, state dict)`` of a checkpoint path (read with :func:`read_state_dict`) or a loaded
    state dict (unwrapped from ``{"state_dict": ...}``-style containers)."""
    if isinstance(checkpoint, Mapping):
        return "state dict", unwrap_state_dict(checkpoint, "state dict")
    return str(checkpoint), read_state_dict(checkpoint)


def fmt_keys(keys: list, total: int) -> str:
    """Up to :data:`_MAX_LISTED` keys for an error message, with the count of the rest."""
    listed = ", ".join(str(k) for k in keys[:_MAX_LISTED])
    more = f" ... (+{total - _MAX_LISTED} more)" if total > _MAX_LISTED else ""
    return f"[{listed}{more}]"

"""What a MONAI Label client may send to the medclass app: data, never code, never a path outside the datastore.

Everything here is plain Python (no MONAI Label import), so the rules are testable on their own and the server
(:mod:`medclass.label.server`), the app (:mod:`medclass.label.application`) and :class:`~medclass.label.bundle.
BundleModel` apply the same ones.

* **Overrides are data.** A MONAI bundle config string is code: ``$...`` is a Python expression, ``@id`` a
  reference, ``%file#id`` a macro that reads another file, ``_target_`` / ``_requires_`` instantiate or import.
  :func:`check_overrides` lets a client set only the keys of :data:`CLIENT_TRAIN_KEYS` (the operator, at
  start-up, those of :data:`OPERATOR_KEYS` plus any named with ``--conf allow_override_keys``), each checked for
  type and range, and refuses every string or dict key MONAI's parser would evaluate or resolve, at any depth.
* **The datastore is the boundary.** A client names images by datastore id (:func:`check_id`), never by path;
  :func:`inside` tells whether a resolved path stays inside a folder (symlinks followed), and every refusal gives
  the same answer whether or not the target exists (:func:`not_found`).
* **Uploads** keep only an allow-listed extension of the client's file name (:func:`upload_extension`); the name
  itself never becomes a path.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ClientError", "Setting", "CLIENT_TRAIN_KEYS", "OPERATOR_KEYS", "INFER_PARAMS", "IGNORED_KEYS",
    "IMAGE_EXTENSIONS", "LABEL_EXTENSIONS", "config_code", "check_overrides", "check_id", "inside",
    "not_found", "upload_extension", "check_infer_params", "check_datalist", "check_train_request",
    "TRAIN_REQUEST_KEYS",
]


class ClientError(ValueError):
    """A request the server refuses: answered with ``status`` and the one-sentence ``message``.

    Args:
        message: what is wrong, for the client (no server paths, no traceback).
        status: the HTTP status (4xx; 503 for a full queue).
        headers: extra response headers (e.g. ``Retry-After``).
    """

    def __init__(self, message: str, status: int = 422, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = int(status)
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class Setting:
    """One allow-listed top-level bundle value: its Python type and inclusive range."""

    kind: type
    low: float | None = None
    high: float | None = None
    doc: str = ""

    def check(self, key: str, value: Any) -> Any:
        """The value, converted to ``kind``; :class:`ClientError` naming the key when it does not fit."""
        if self.kind is bool:
            if isinstance(value, bool):
                return value
            raise ClientError(f"setting {key!r} must be true or false, got {_show(value)}")
        if self.kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
            if not ok and isinstance(value, float) and value.is_integer():
                value, ok = int(value), True
        else:  # float
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok:
            raise ClientError(f"setting {key!r} must be a number ({self.kind.__name__}), got {_show(value)}")
        value = self.kind(value)
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise ClientError(f"setting {key!r} must be between {self.low:g} and {self.high:g}, got {value:g}")
        return value


#: the top-level training values a client may set in ``POST /train/<model>`` (also inside ``overrides``)
CLIENT_TRAIN_KEYS: dict[str, Setting] = {
    "max_epochs": Setting(int, 1, 1000, "training epochs"),
    "learning_rate": Setting(float, 1e-7, 1.0, "peak learning rate"),
    "batch_size": Setting(int, 1, 1024, "images per step"),
    "seed": Setting(int, 0, 2**31 - 1, "random seed of the run"),
    "split_seed": Setting(int, 0, 2**31 - 1, "seed of the patient-disjoint split"),
    "weight_decay": Setting(float, 0.0, 1.0, "AdamW weight decay"),
    "warmup_epochs": Setting(int, 0, 100, "learning-rate warm-up epochs"),
    "early_stop_patience": Setting(int, 0, 1000, "epochs without improvement before stopping"),
    "label_smoothing": Setting(float, 0.0, 0.5, "label smoothing of the loss"),
}

#: what the operator may set for every run with ``--conf bundle_overrides`` (without widening the allowlist)
OPERATOR_KEYS: dict[str, Setting] = {
    **CLIENT_TRAIN_KEYS,
    "num_threads": Setting(int, 1, 1024, "torch intra-op threads"),
    "num_workers": Setting(int, 0, 256, "data loader worker processes"),
}

#: keys of a train request that are not bundle values: ``from_scratch`` and ``datalist`` (checked by the app),
#: ``overrides`` (a dict of allow-listed values)
TRAIN_REQUEST_KEYS = ("from_scratch", "datalist", "overrides")

#: keys MONAI Label's own client or server add to requests; carried, never used as settings
IGNORED_KEYS = frozenset({"model", "client_id", "gpus", "local_rank", "device", "result_extension", "result_dtype",
                          "result_compress", "label_info", "description"})

#: ``params`` of ``POST /infer/<model>`` a client may set
INFER_PARAMS = ("saliency", "saliency_method", "saliency_threshold")

#: image files a client may upload (the datastore lists the same); ``.nii.gz`` before ``.gz``-less names
IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".dcm", ".dicom", ".png", ".jpg", ".jpeg", ".nrrd", ".mha")
#: label files a client may save: image-level labels as JSON, or a segmentation image
LABEL_EXTENSIONS = (".json", ".nii.gz", ".nii", ".nrrd", ".png", ".seg.nrrd")

_CODE_KEYS = ("_target_", "_requires_", "_disabled_", "_mode_", "_desc_")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def config_code(value: Any) -> str | None:
    """Why MONAI's config parser would treat ``value`` as code or a reference (None: it is plain data).

    Strings holding ``$`` (an expression), ``@`` (a reference), ``%`` (a macro reading another file) or ``#``
    (the id separator of references and macros) anywhere, and dict keys such as ``_target_`` or ``_requires_``,
    are refused at any depth of lists and dicts.
    """
    if isinstance(value, str):
        for ch, what in (("$", "an expression"), ("@", "a reference"), ("%", "a macro"), ("#", "a reference")):
            if ch in value:
                return f"holds {ch!r}, which the bundle's config parser reads as {what}"
        return None
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                return "has a key that is not a string"
            if k in _CODE_KEYS or k.startswith("_") and k.endswith("_"):
                return f"has the key {k!r}, which the bundle's config parser instantiates or imports"
            why = config_code(k) or config_code(v)
            if why:
                return why
        return None
    if isinstance(value, (list, tuple)):
        for v in value:
            why = config_code(v)
            if why:
                return why
        return None
    if value is None or isinstance(value, (bool, int, float)):
        return None
    return f"is a {type(value).__name__}, not a JSON value"


def check_overrides(values: Mapping[str, Any], allowed: Mapping[str, Setting], extra_keys: Iterable[str] = (),
                    where: str = "request", more_names: Iterable[str] = ()) -> dict[str, Any]:
    """Checked top-level bundle values: only allow-listed keys, typed and in range, never config code.

    Args:
        values: key -> value, as sent.
        allowed: the allowlist (:data:`CLIENT_TRAIN_KEYS` or :data:`OPERATOR_KEYS`).
        extra_keys: keys the operator allowed explicitly; their values are any JSON data that is not code.
        where: named in the error ("request", "--conf bundle_overrides").
        more_names: further keys the request takes (checked elsewhere), listed in the error as allowed.

    Returns:
        The values converted to their types.

    Raises:
        ClientError: naming the first key that is not allowed, has the wrong type or range, or holds code.
    """
    if not isinstance(values, Mapping):
        raise ClientError(f"{where}: overrides must be a JSON object of settings, got {type(values).__name__}")
    extra = set(extra_keys)
    out = {}
    for key, value in values.items():
        why = config_code(key) if isinstance(key, str) else "is not a string"
        if why:
            raise ClientError(f"{where}: the key {_show(key)} is refused: it {why}")
        why = config_code(value)
        if why:
            raise ClientError(f"{where}: setting {key!r} is refused: its value {why}")
        if key in allowed:
            out[key] = allowed[key].check(key, value)
        elif key in extra:
            out[key] = value
        else:
            names = ", ".join(sorted(set(allowed) | extra | set(more_names)))
            raise ClientError(f"{where}: setting {key!r} may not be changed here; allowed: {names}")
    return out


def check_infer_params(params: Any, saliency_methods: Iterable[str]) -> dict[str, Any]:
    """The ``params`` of an infer request: :data:`INFER_PARAMS` checked, MONAI Label's own keys dropped.

    Raises:
        ClientError: params that are not a JSON object, an unknown key, a value of the wrong type, code.
    """
    if not isinstance(params, Mapping):
        raise ClientError("params must be a JSON object")
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key in IGNORED_KEYS:
            continue
        why = config_code(value)
        if why:
            raise ClientError(f"params: {key!r} is refused: its value {why}")
        if key == "saliency":
            if not isinstance(value, bool) and value not in (0, 1, "true", "false"):
                raise ClientError(f"params: 'saliency' must be true or false, got {_show(value)}")
            out[key] = value in (True, 1, "true")
        elif key == "saliency_method":
            methods = sorted(saliency_methods)
            if value not in methods:
                raise ClientError(f"params: 'saliency_method' must be one of {', '.join(methods)}, got {_show(value)}")
            out[key] = value
        elif key == "saliency_threshold":
            out[key] = Setting(float, 0.01, 1.0).check(key, value)
        else:
            raise ClientError(f"params: {key!r} is not a parameter of this model; allowed: {', '.join(INFER_PARAMS)}")
    return out


def check_id(value: Any, what: str = "image") -> str:
    """A datastore id (letters, digits, ``.``, ``_``, ``-``; no path separators, no ``..``, 128 at most).

    Raises:
        ClientError: 404 "not found", the same answer as for an id that is well formed but unknown.
    """
    if _valid_id(value):
        return value
    raise not_found(what, value)


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) and _ID.fullmatch(value) is not None and ".." not in value


def not_found(what: str, value: Any) -> ClientError:
    """The one answer for an id, path or URL that is not in the datastore (whether or not it exists elsewhere)."""
    name = f"{what} {value!r}" if _valid_id(value) else f"the {what} given"
    return ClientError(f"{name} is not in the datastore: name a datastore id or upload the file", status=404)


def inside(path: str | os.PathLike, folders: Iterable[str | os.PathLike]) -> bool:
    """Whether ``path`` resolved (symlinks followed) lies inside one of ``folders`` (also resolved)."""
    try:
        real = Path(os.path.realpath(path))
    except (OSError, ValueError):
        return False
    for folder in folders:
        root = Path(os.path.realpath(folder))
        if real == root or root in real.parents:
            return True
    return False


def upload_extension(filename: str | None, allowed: Iterable[str] = IMAGE_EXTENSIONS,
                     head: bytes = b"") -> str:
    """The allow-listed extension of an uploaded file's name (lower case); the name itself is never used.

    A name without a known extension is taken as DICOM when ``head`` (the file's first bytes) has the DICOM
    preamble, as files straight from PACS often have no extension.

    Raises:
        ClientError: 415 naming the allowed extensions.
    """
    name = os.path.basename(str(filename or "")).lower()
    for ext in sorted(allowed, key=len, reverse=True):
        if name.endswith(ext) and len(name) > len(ext):
            return ext
    if len(head) >= 132 and head[128:132] == b"DICM" and ".dcm" in allowed:
        return ".dcm"
    raise ClientError(f"uploaded file type not accepted; send one of {', '.join(allowed)} (or a DICOM file)",
                      status=415)


def check_datalist(value: Any, roots: Iterable[str | os.PathLike]) -> str:
    """The real path of a label CSV / JSON a train request names: inside one of ``roots`` (the datastore first,
    then the operator's ``datalist_dirs``), relative names taken from the datastore.

    Raises:
        ClientError: 404, the same for every refusal (outside, missing, a URL, another file type).
    """
    roots = [str(r) for r in roots]
    refused = ClientError("datalist must name a .csv or .json file inside the datastore (or in a folder the server "
                          "allows); the one given is not such a file", status=404)
    if not isinstance(value, str) or not value or "\x00" in value or "://" in value or config_code(value) or not roots:
        raise refused
    path = Path(value)
    if not path.is_absolute():
        path = Path(roots[0]) / path
    if not inside(path, roots) or not path.is_file() or path.suffix.lower() not in (".csv", ".json"):
        raise refused
    return os.path.realpath(path)


def check_train_request(params: Any, datalist_roots: Iterable[str | os.PathLike]) -> dict[str, Any]:
    """A train request as data: ``{"from_scratch": bool, "datalist": path, "overrides": {...}}`` (keys present
    only when given).

    The client's settings may come at the top level or inside ``overrides`` (the top level wins); each must be a
    key of :data:`CLIENT_TRAIN_KEYS`, typed and in range. :data:`IGNORED_KEYS` (added by MONAI Label's client and
    server) are dropped.

    Raises:
        ClientError: naming the first refused key and why; nothing is run.
    """
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise ClientError("the train request must be a JSON object of settings")
    values = {k: v for k, v in params.items() if k not in IGNORED_KEYS}
    out: dict[str, Any] = {}
    if "from_scratch" in values:
        out["from_scratch"] = Setting(bool).check("from_scratch", values.pop("from_scratch"))
    if "datalist" in values:
        datalist = values.pop("datalist")
        if datalist not in (None, ""):
            out["datalist"] = check_datalist(datalist, datalist_roots)
    nested = values.pop("overrides", None) or {}
    if isinstance(nested, str):
        try:
            nested = json.loads(nested)
        except ValueError as e:
            raise ClientError("overrides must be a JSON object of settings") from e
    names = TRAIN_REQUEST_KEYS
    settings = check_overrides(nested, CLIENT_TRAIN_KEYS, where="overrides")
    settings.update(check_overrides(values, CLIENT_TRAIN_KEYS, where="train request", more_names=names))
    if settings:
        out["overrides"] = settings
    return out

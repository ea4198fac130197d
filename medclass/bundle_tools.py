"""Checks every medclass bundle must pass: workflow properties, metadata schema, network I/O, TorchScript export."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from medclass.errors import SettingError
from medclass.exports import export_model
from medclass.networks.modelfile import check_given, model_settings, read_model_record
from medclass.vocab import MODEL_SETTINGS

logger = logging.getLogger(__name__)

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "metadata_schema.json"
CONFIG_SOURCE = Path(__file__).resolve().parent / "bundle_configs"
VALUES = "common.yaml"  # a bundle's own values; sync_bundle copies them to the top of its inference.yaml
BASE = "inference.yaml"  # complete by itself (the Model Zoo runs it alone); every other workflow layers over it
# generated workflow file -> its source in medclass/bundle_configs (inference.yaml also gets the bundle's values)
GENERATED = {name: name for name in (BASE, "train.yaml", "evaluate.yaml", "saliency.yaml", "multi_gpu_train.yaml",
                                     "external.yaml")}
# the config files of each workflow, in the order they are layered (what `monai.bundle run --config_file` takes)
WORKFLOW_FILES = {
    "inference": (BASE,),
    "train": (BASE, "train.yaml"),
    "evaluate": (BASE, "evaluate.yaml"),
    "saliency": (BASE, "saliency.yaml"),
    "multi_gpu_train": (BASE, "train.yaml", "multi_gpu_train.yaml"),
    "external": (BASE, "evaluate.yaml", "external.yaml"),
}
# workflow -> MONAI workflow type, for check_properties
WORKFLOWS = {"train": "train", "inference": "inference", "evaluate": "inference", "saliency": "inference"}


def config_files(bundle_dir: str | os.PathLike, *names: str) -> list[str]:
    """``configs/inference.yaml`` (the complete base) followed by the other named configs of a bundle.

    ``config_files(b, "train.yaml")`` is what ``--config_file "['configs/inference.yaml','configs/train.yaml']"``
    runs; ``config_files(b)`` and ``config_files(b, "inference.yaml")`` the inference workflow alone.
    """
    configs = Path(bundle_dir) / "configs"
    files = [configs / BASE, *[configs / n for n in names if n != BASE]]
    for f in files:
        if not f.exists():
            raise FileNotFoundError(f"{f}: bundle config missing")
    return [str(f) for f in files]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def yaml_comment_at(line: str) -> int:
    """Where the YAML comment of ``line`` starts (a ``#`` first or after whitespace, outside quotes), else
    ``len(line)``."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return i
    return len(line)


def _strip_comment(line: str) -> str:
    """``line`` without its YAML comment and trailing blanks."""
    return line[:yaml_comment_at(line)].rstrip()


def values_text(common: str | os.PathLike) -> str:
    """A bundle's ``common.yaml`` without comments and blank lines: the values section of its ``inference.yaml``.

    Raises:
        ValueError: the file is not a YAML mapping, or dropping its comments would change a value.
    """
    import yaml

    common = Path(common)
    text = common.read_text()
    values = yaml.safe_load(text)
    if not isinstance(values, dict) or not values:
        raise ValueError(f"{common}: expected the bundle's values as a YAML mapping (key: value lines)")
    out = "\n".join(ln for ln in map(_strip_comment, text.splitlines()) if ln.strip()) + "\n"
    if yaml.safe_load(out) != values:
        raise ValueError(f"{common}: its values could not be copied without their comments (a '#' in an unquoted "
                         "value?); quote that value")
    return out


NEW_MODEL = "new_model"  # inference.yaml's item holding the bundle's model-defining values (those of a new model)


def split_model_values(values: str) -> str:
    """The values section of ``inference.yaml`` with the model-defining settings (:data:`MODEL_SETTINGS`) moved
    under ``new_model:`` and each top-level one resolved from ``model`` (the model file's record where one exists,
    else ``new_model``): ``image_size: "$@model['image_size']"``. A command-line ``--image_size`` replaces that
    expression, which is how a workflow knows the value was given (and checks it against the model file).
    """
    import yaml

    blocks: list[list[str]] = []
    for line in values.splitlines():
        if blocks and line[:1] in (" ", "\t", "-", "]", "}"):  # "- item": a block list written unindented
            blocks[-1].append(line)  # a continuation of the previous key's value
        else:
            blocks.append([line])
    top, model = [], []
    for block in blocks:
        key = block[0].split(":", 1)[0].strip().strip("'\"")
        if key in MODEL_SETTINGS:
            model += ["  " + ln for ln in block]
        else:
            top += block
    resolved = [f"{k}: \"$@model['{k}']\"" for k in MODEL_SETTINGS]
    out = "\n".join(top + [f"{NEW_MODEL}:"] + model + resolved) + "\n"
    before, after = yaml.safe_load(values), yaml.safe_load(out)
    moved = {k: before[k] for k in MODEL_SETTINGS if k in before}
    if after.get(NEW_MODEL) != moved or any(after.get(k) != v for k, v in before.items() if k not in moved):
        raise ValueError("the bundle's model-defining values could not be moved under new_model: (indent "
                         "continuation lines in configs/common.yaml)")
    return out


def render_configs(bundle_dir: str | os.PathLike) -> dict[str, str]:
    """The workflow configs of a bundle, made from ``medclass/bundle_configs`` and the bundle's ``common.yaml``.

    The workflow files hold structure only and are the same in every bundle, except that ``inference.yaml``, the
    complete base every workflow starts from, begins with a copy of the bundle's values (``configs/common.yaml``
    without its comments) and their SHA-256 (``common_sha256``: a run stops when ``common.yaml`` has changed since).
    The model-defining values (:data:`MODEL_SETTINGS`) are copied under ``new_model:``, and each top-level one
    resolves from the model file where one exists (:func:`split_model_values`).
    A change to the pipeline is made once, in the source, and ``medclass sync-bundles`` writes it into each bundle,
    which stays self-contained: the Model Zoo's checks, a zip or MONAI Label load it without medclass's source tree.
    """
    common = Path(bundle_dir) / "configs" / VALUES
    out = {}
    for name, source in GENERATED.items():
        text = (f"# GENERATED by `medclass sync-bundles` from medclass/bundle_configs/{source}: edit it there and run "
                "the command.\n")
        if name == BASE:
            text += (f"# This bundle's values, from configs/{VALUES} (edit and document them there); the ones that "
                     "define the model are a new model's (new_model): training uses them, the other workflows take "
                     "the model file's (model:, below)\n"
                     f"common_sha256: {_sha256(common)}\n" + split_model_values(values_text(common)) + "\n")
        out[name] = text + (CONFIG_SOURCE / source).read_text().rstrip() + "\n"
    return out


def sync_bundle(bundle_dir: str | os.PathLike, check: bool = False) -> list[str]:
    """Write the generated workflow configs into ``bundle_dir/configs``; returns the names that were out of date.

    With ``check``, nothing is written (for tests and CI).
    """
    configs = Path(bundle_dir) / "configs"
    if not (configs / VALUES).exists():
        raise FileNotFoundError(f"{configs / VALUES}: not a medclass bundle (no {VALUES})")
    stale = []
    for name, text in render_configs(bundle_dir).items():
        path = configs / name
        if not path.exists() or path.read_text() != text:
            stale.append(name)
            if not check:
                path.write_text(text)
    return stale


def check_values(bundle_root: str | os.PathLike, common_sha256: str | None) -> None:
    """Stop a run whose ``configs/inference.yaml`` holds an older copy of the bundle's ``configs/common.yaml``.

    Every workflow's ``initialize`` calls it with the SHA-256 of the ``common.yaml`` its values were copied from;
    a bundle folder without ``common.yaml`` (a released copy of the configs) passes.

    Raises:
        medclass.errors.SettingError: ``common.yaml`` was edited after ``medclass sync-bundles`` copied it.
    """
    common = Path(bundle_root) / "configs" / VALUES
    if common_sha256 and common.is_file() and _sha256(common) != common_sha256:
        raise SettingError(
            f"{common} changed after its values were copied into {common.parent / BASE}, which every workflow "
            f"starts from: run `medclass sync-bundles {Path(bundle_root)}` to copy them, or give changed values on "
            "the command line (--key value) and leave common.yaml as it was")


def check_properties(bundle_dir: str | os.PathLike, workflow: str = "train", **overrides) -> list:
    """Missing required property IDs of a bundle workflow (empty when complete)."""
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(
        config_file=config_files(bundle_dir, *WORKFLOW_FILES[workflow]),
        meta_file=str(Path(bundle_dir) / "configs" / "metadata.json"),
        logging_file=str(Path(bundle_dir) / "configs" / "logging.conf"),
        workflow_type=WORKFLOWS[workflow],
        bundle_root=str(bundle_dir),
        **overrides,
    )
    wf.initialize()
    missing = wf.check_properties()
    return list(missing or [])


def verify_metadata(bundle_dir: str | os.PathLike) -> None:
    """Validate ``configs/metadata.json`` against the schema kept in medclass (no download)."""
    from monai.bundle import verify_metadata as _verify

    _verify(meta_file=str(Path(bundle_dir) / "configs" / "metadata.json"), filepath=str(SCHEMA_PATH))


def verify_net_in_out(bundle_dir: str | os.PathLike, device: str = "cpu") -> None:
    """Run the bundle's network on a fake input shaped as ``metadata.json`` says and check the output."""
    from monai.bundle import verify_net_in_out as _verify

    _verify(
        net_id="network_def",
        meta_file=str(Path(bundle_dir) / "configs" / "metadata.json"),
        config_file=config_files(bundle_dir, "inference.yaml"),
        device=device,
        bundle_root=str(bundle_dir),
    )


def model_metadata(meta: dict, record: dict) -> dict:
    """``metadata.json`` content describing the model a model file records (its input channels and size, its
    labels as output channels, logits out), for an export of that model rather than of the bundle's defaults."""
    import copy

    meta = copy.deepcopy(meta)
    fmt = meta.setdefault("network_data_format", {})
    image = fmt.get("inputs", {}).get("image")
    if isinstance(image, dict):
        if record.get("in_channels"):
            image["num_channels"] = int(record["in_channels"])
            image["channel_def"] = {str(i): "image" for i in range(int(record["in_channels"]))}
        if record.get("image_size"):
            image["spatial_shape"] = [int(s) for s in record["image_size"]]
    pred = fmt.get("outputs", {}).get("pred")
    if isinstance(pred, dict) and record.get("label_names"):
        pred["num_channels"] = len(record["label_names"])
        pred["channel_def"] = {str(i): str(n) for i, n in enumerate(record["label_names"])}
        pred["format"], pred["value_range"] = "logits", []
    return meta


def export_torchscript(bundle_dir: str | os.PathLike, ckpt_file: str | os.PathLike | None = None,
                       filepath: str | os.PathLike | None = None, **overrides) -> Path:
    """The Model Zoo's TorchScript export of ``models/model.pt`` to ``models/model.ts``.

    It is ``medclass export --format torchscript`` (the network built from the model file alone, the export's
    logits checked against PyTorch's) with what MONAI's ``ckpt_export`` puts inside as well, so that MONAI's
    ``load_net_with_metadata`` and the Zoo's checks read it: ``metadata.json`` describing this model (its labels,
    input size and channels, logits out) and the bundle's inference config as JSON (``inference.json``).
    ``overrides`` are config values to check: one contradicting the model file is an error
    naming both values.
    """
    import json

    from monai.bundle import ConfigParser

    bundle_dir = Path(bundle_dir)
    ckpt = Path(ckpt_file) if ckpt_file else bundle_dir / "models" / "model.pt"
    if not ckpt.exists():
        raise FileNotFoundError(f"{ckpt}: no trained model to export (run the train workflow first)")
    out = Path(filepath) if filepath else bundle_dir / "models" / "model.ts"
    check_given(model_settings(ckpt, {}), overrides)
    meta = json.loads((bundle_dir / "configs" / "metadata.json").read_text())
    extra = {"metadata.json": json.dumps(model_metadata(meta, read_model_record(ckpt)))}
    for config in config_files(bundle_dir, "inference.yaml"):
        extra[Path(config).stem + ".json"] = json.dumps(ConfigParser.load_config_file(config))
    return export_model(ckpt, "torchscript", out, extra_files=extra).path


LARGE_FILES = "large_files.yml"
HASH_TYPES = ("md5", "sha1", "sha256", "sha512")
_LARGE_FILES_HEADER = """\
# Where this bundle's released weights are published, in the Model Zoo's format: its CI downloads each file to
# `path` (monai.apps.download_url, which checks the hash) before verifying the bundle. The weights are trained
# locally; when a model is released, upload models/model.pt (and models/model.ts) and run
#   medclass large-files BUNDLE --url URL_OF_MODEL_PT [--ts-url URL_OF_MODEL_TS]
# which writes this file with the SHA-256 of the files in models/. `large_files: []`: no model released yet.
"""


def _file_hash(path: Path, hash_type: str = "sha256") -> str:
    h = hashlib.new(hash_type)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_large_files(bundle_dir: str | os.PathLike, url: str, ts_url: str | None = None) -> Path:
    """Write ``large_files.yml``: where the released ``models/model.pt`` (and, with ``ts_url``, ``models/model.ts``)
    can be downloaded, with the SHA-256 of the local files.

    Raises:
        FileNotFoundError: a model file to record is missing.
        ValueError: a URL is not a URL.
    """
    bundle_dir = Path(bundle_dir)
    lines = ["large_files:"]
    for rel, where in (("models/model.pt", url), ("models/model.ts", ts_url)):
        if where is None:
            continue
        if "://" not in str(where):
            raise ValueError(f"{where!r}: expected the URL the file is published at (https://..., file://...)")
        path = bundle_dir / rel
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no file to release (train the model first; model.ts: medclass "
                                    "export-bundle)")
        lines += [f"  - path: {rel}", f"    url: {where}", f"    hash_val: {_file_hash(path)}",
                  "    hash_type: sha256"]
    out = bundle_dir / LARGE_FILES
    out.write_text(_LARGE_FILES_HEADER + "\n".join(lines) + "\n")
    return out


def large_files(bundle_dir: str | os.PathLike) -> list[dict]:
    """The entries of a bundle's ``large_files.yml`` (empty when it has none), checked for the Model Zoo's keys.

    Raises:
        ValueError: an entry without ``path`` inside the bundle, ``url`` or a supported ``hash_type``.
    """
    import yaml

    path = Path(bundle_dir) / LARGE_FILES
    if not path.is_file():
        return []
    content = yaml.safe_load(path.read_text()) or {}
    entries = content.get("large_files") if isinstance(content, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected `large_files:` followed by a list of path / url / hash_val / hash_type")
    for e in entries:
        rel = str(e.get("path", "")) if isinstance(e, dict) else ""
        if not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise ValueError(f"{path}: entry {e!r} needs a path inside the bundle (e.g. models/model.pt)")
        if "://" not in str(e.get("url", "")):
            raise ValueError(f"{path}: {rel} has no url to download it from")
        if e.get("hash_val") and str(e.get("hash_type", "")).lower() not in HASH_TYPES:
            raise ValueError(f"{path}: {rel} has hash_type {e.get('hash_type')!r}; use one of {', '.join(HASH_TYPES)}")
    return entries


def check_large_files(bundle_dir: str | os.PathLike) -> list[str]:
    """Compare the files ``large_files.yml`` names with the bundle's own copies (no download).

    Returns:
        One line per entry: ``models/model.pt: sha256 matches`` or ``...: not here (downloaded from URL)``.

    Raises:
        ValueError: a local file differs from the recorded hash (released weights and local weights differ).
    """
    out = []
    for e in large_files(bundle_dir):
        path = Path(bundle_dir) / e["path"]
        if not path.is_file():
            out.append(f"{e['path']}: not here (downloaded from {e['url']})")
        elif e.get("hash_val"):
            kind = str(e.get("hash_type") or "md5").lower()
            if _file_hash(path, kind) != str(e["hash_val"]).lower():
                raise ValueError(f"{path} differs from the released file named in {Path(bundle_dir) / LARGE_FILES} "
                                 f"({kind} {e['hash_val']}): after training a new model, release it and run "
                                 "`medclass large-files` again")
            out.append(f"{e['path']}: {kind} matches")
        else:
            out.append(f"{e['path']}: no hash recorded")
    return out

"""Checks every medclass bundle must pass: workflow properties, metadata schema, network I/O, TorchScript export."""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "metadata_schema.json"

# (workflow type, config files on top of common.yaml) checked by check_properties
WORKFLOWS = {"train": ["train.yaml"], "inference": ["inference.yaml"], "evaluate": ["evaluate.yaml"]}


def config_files(bundle_dir: str | os.PathLike, *names: str) -> list[str]:
    """``configs/common.yaml`` followed by the named configs of a bundle."""
    configs = Path(bundle_dir) / "configs"
    files = [configs / "common.yaml", *[configs / n for n in names]]
    for f in files:
        if not f.exists():
            raise FileNotFoundError(f"{f}: bundle config missing")
    return [str(f) for f in files]


def check_properties(bundle_dir: str | os.PathLike, workflow: str = "train", **overrides) -> list:
    """Missing required property IDs of a bundle workflow (empty when complete)."""
    from monai.bundle import ConfigWorkflow

    kind = "train" if workflow == "train" else "inference"
    wf = ConfigWorkflow(
        config_file=config_files(bundle_dir, *WORKFLOWS[workflow]),
        meta_file=str(Path(bundle_dir) / "configs" / "metadata.json"),
        logging_file=str(Path(bundle_dir) / "configs" / "logging.conf"),
        workflow_type=kind,
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
        config_file=config_files(bundle_dir),
        device=device,
        bundle_root=str(bundle_dir),
    )


def export_torchscript(bundle_dir: str | os.PathLike, ckpt_file: str | os.PathLike | None = None,
                       filepath: str | os.PathLike | None = None, **overrides) -> Path:
    """``monai.bundle.ckpt_export`` of ``models/model.pt`` to ``models/model.ts`` (metadata and configs inside).

    ``overrides`` are config values the model was trained with when they differ from the bundle's defaults
    (e.g. ``image_size``, ``width``, ``label_names``).
    """
    from monai.bundle import ckpt_export

    bundle_dir = Path(bundle_dir)
    ckpt = Path(ckpt_file) if ckpt_file else bundle_dir / "models" / "model.pt"
    if not ckpt.exists():
        raise FileNotFoundError(f"{ckpt}: no trained model to export (run the train workflow first)")
    out = Path(filepath) if filepath else bundle_dir / "models" / "model.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(out),
        ckpt_file=str(ckpt),
        meta_file=str(bundle_dir / "configs" / "metadata.json"),
        config_file=config_files(bundle_dir, "inference.yaml"),
        bundle_root=str(bundle_dir),
        **overrides,
    )
    return out

"""MONAI Label app serving medclass bundles: classification inference (probabilities, 0/1 decisions at the
model's stored thresholds, saliency of the top label) and retraining from image-level labels.

Start a server (``monailabel`` installed with ``scripts/install_label.sh``)::

    monailabel start_server --app "$(medclass label-app)" --studies /path/to/images \\
        --conf bundles bundles/cxr_classification,bundles/volume_classification \\
        --uvicorn_app medclass.label.server:app

``--uvicorn_app medclass.label.server:app`` makes MONAI Label 0.8.5 importable next to pydicom 3 (see
:mod:`medclass.label.compat`). The modules needing ``monailabel`` (``application``, ``server``) are imported
only by the server; :mod:`medclass.label.bundle` (the inference / training logic) works without it.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["app_dir"]


def app_dir() -> Path:
    """The MONAI Label app folder shipped with medclass (its ``main.py`` loads :class:`MedclassApp`)."""
    return Path(__file__).resolve().parent / "app"

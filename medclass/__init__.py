"""medclass: MONAI-based medical image classification for 2D radiographs and 3D volumes."""

from __future__ import annotations

import logging
import os
from pathlib import Path

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

DATA_ENV = "MEDCLASS_DATA"


def data_root(required: bool = False) -> Path | None:
    """Return the folder of real public data used by tests, benchmarks and tutorials.

    The one setting is the environment variable ``MEDCLASS_DATA``; without it, ``../shared/data``
    next to the project root is used when it exists.

    Args:
        required: raise ``FileNotFoundError`` instead of returning ``None`` when no folder is found.

    Returns:
        The folder, or ``None`` when it is absent and ``required`` is False.
    """
    env = os.environ.get(DATA_ENV)
    if env:
        path = Path(env).expanduser().resolve()
    else:
        path = (Path(__file__).resolve().parent.parent.parent / "shared" / "data").resolve()
    if path.is_dir():
        return path
    if required:
        raise FileNotFoundError(
            f"real data folder not found at {path}: set {DATA_ENV} to the folder holding medmnist/, cxr14/, dicom/, nifti/"
        )
    return None

"""Make MONAI Label 0.8.5 importable in an environment with pydicom 3 and without its DICOM SEG extras.

``monailabel.interfaces.app`` imports ``monailabel.datastore.utils.convert``, which imports ``pydicom_seg``
(DICOM SEG export of segmentation masks) at module level. pydicom-seg 0.4.1, the last release, imports
``pydicom._storage_sopclass_uids``, a private module pydicom 3 removed (medclass needs pydicom 3 for
``pydicom.pixels``), and it pins numpy < 2 and jsonschema < 4. Classification never writes DICOM SEG, so:

* ``pydicom._storage_sopclass_uids`` is aliased to ``pydicom.uid`` (which holds the same UIDs in pydicom 3)
  when it is missing, so an installed pydicom-seg imports;
* when pydicom-seg is not installed (``scripts/install_label.sh`` does not install it), a placeholder module
  stands in for it, and using it raises an ``ImportError`` that says why.

Nothing in site-packages is changed: :func:`install` only adds entries to ``sys.modules`` of the running process.
It must run before ``monailabel.interfaces.app`` is imported: :mod:`medclass.label.server` (the uvicorn app of
the server process) and :mod:`medclass.label.application` (imported by the app's ``main.py`` in MONAI Label's
training subprocess) call it first.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import types

logger = logging.getLogger(__name__)

_PLACEHOLDER_DOC = "placeholder for pydicom-seg (not installed): DICOM SEG export is not available"


class _MissingPydicomSeg(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise ImportError(
            f"pydicom_seg.{name}: DICOM SEG export needs pydicom-seg, which medclass does not install (it pins "
            "numpy<2 and pydicom<3); medclass classification models do not produce segmentations"
        )


def install() -> None:
    """Register the ``sys.modules`` entries described in the module docstring (idempotent)."""
    import pydicom.uid

    if "pydicom._storage_sopclass_uids" not in sys.modules:
        try:
            importlib.import_module("pydicom._storage_sopclass_uids")
        except ImportError:
            sys.modules["pydicom._storage_sopclass_uids"] = pydicom.uid
    if "pydicom_seg" not in sys.modules and importlib.util.find_spec("pydicom_seg") is None:
        sys.modules["pydicom_seg"] = _MissingPydicomSeg("pydicom_seg", _PLACEHOLDER_DOC)
        logger.debug("pydicom-seg is not installed: a placeholder stands in (no DICOM SEG export)")

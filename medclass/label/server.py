"""The uvicorn app for ``monailabel start_server ... --uvicorn_app medclass.label.server:app``.

MONAI Label's own ``monailabel.app:app`` with :func:`medclass.label.compat.install` run first, so that
MONAI Label 0.8.5 imports next to pydicom 3 (see :mod:`medclass.label.compat`). Nothing else differs.
"""

from medclass.label.compat import install

install()

from monailabel.app import app  # noqa: E402

__all__ = ["app"]

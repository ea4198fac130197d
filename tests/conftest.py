"""Shared fixtures: the real-data folder (skips with a reason where it is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medclass import DATA_ENV, data_root


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real public data folder (``MEDCLASS_DATA``); skips the test where it is absent."""
    root = data_root()
    if root is None:
        pytest.skip(f"real data absent: set {DATA_ENV} to the shared data folder (../shared/data)")
    return root


def need(root: Path, rel: str) -> Path:
    """A file under the real-data folder, or skip naming the missing file."""
    path = root / rel
    if not path.exists():
        pytest.skip(f"real data file absent: {path}")
    return path


def error_chain(exc: BaseException) -> str:
    """All messages in an exception's cause/context chain (MONAI wraps config and transform errors)."""
    parts = []
    while exc is not None:
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)

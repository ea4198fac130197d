"""Shared fixtures: the real-data folder (skips with a reason where it is absent)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
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


@pytest.fixture(autouse=True)
def restore_root_logging() -> Iterator[None]:
    """Remove the root handlers a test added, and put the root level back, after each test.

    A bundle workflow run in-process applies its ``configs/logging.conf`` (``logging.config.fileConfig``), which
    replaces the root handlers with a ``StreamHandler`` on the ``sys.stdout`` of that moment: pytest's capture file
    of that test. A later test that logs through the root logger then writes to a closed file and Python prints
    ``--- Logging error ---`` into that test's captured stderr.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):  # pytest's own capture handlers come and go with each phase: left alone
        if handler not in handlers and not type(handler).__module__.startswith("_pytest"):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


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

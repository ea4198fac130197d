"""Helpers for the data tests: tiny image files and CSV writers."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_png(path: Path, value: int = 100, size: int = 8) -> Path:
    """A small grayscale PNG (its folders are created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, dtype=np.uint8)).save(path)
    return path


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """``tmp_path/img/a.png`` ... ``f.png``."""
    for k, name in enumerate("abcdef"):
        write_png(tmp_path / "img" / f"{name}.png", value=20 * k)
    return tmp_path

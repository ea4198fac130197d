"""The report in a real headless Chromium: it loads without console errors and its screenshot shows the plots.

Skips where ``/usr/bin/chromium`` is absent (``.ci/run`` installs Debian's ``chromium``)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from medclass.report import build_report
from tests.report.cdp import chromium_path, render
from tests.report.test_report import _png, make_folder

pytestmark = pytest.mark.skipif(chromium_path() is None,
                                reason="chromium absent: apt-get install chromium (.ci/run does it)")


def colourful_share(png) -> float:
    """Share of strongly coloured pixels (plot lines, markers, confusion-matrix cells): text and tables are
    black/grey on white."""
    a = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
    return float(((a.max(axis=2) - a.min(axis=2)) > 60).mean())


def test_report_renders_without_errors_and_shows_the_plots(real_data, tmp_path):
    folder = make_folder(tmp_path / "eval", real_data)
    _png(folder / "saliency" / "a.png", (220, 30, 30))
    build_report(folder, n_bootstrap=50)
    shot = tmp_path / "report.png"
    errors = render(folder / "report.html", shot)
    assert errors == []
    img = Image.open(shot)
    assert img.size[0] == 1280 and img.size[1] > 3000  # the full page: every section
    gray = np.asarray(img.convert("L"), dtype=float)
    assert gray.std() > 20  # not blank
    with_plots = colourful_share(shot)

    # the same page without its images: the check above would fail, so it does see the plots
    page = (folder / "report.html").read_text()
    (folder / "no_images.html").write_text(re.sub(r"<img [^>]*>", "", page))
    errors = render(folder / "no_images.html", tmp_path / "no_images.png")
    assert errors == []
    without = colourful_share(tmp_path / "no_images.png")
    assert with_plots > 0.01 and with_plots > 3 * without, (with_plots, without)


def test_console_errors_and_broken_resources_are_caught(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><body><p>x</p><img src="missing.png">'
                    '<script>console.error("deliberate"); notDefined();</script></body></html>')
    errors = render(page, tmp_path / "bad.png")
    assert any("deliberate" in e for e in errors)
    assert any("notDefined" in e for e in errors)
    assert any("missing.png" in e for e in errors)

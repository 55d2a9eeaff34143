"""The report page in a real headless Chromium: every figure decodes, the page is not blank.

Needs Debian's chromium (``apt-get install -y chromium``); skipped with that hint otherwise.
The page's inline script writes how many ``<img>`` decoded (``naturalWidth > 0``) into
``#render-check``; ``--dump-dom`` reads the DOM back after the load event.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import FIGURES

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed: apt-get install -y chromium"),
]
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=5000",
]


def chromium(page: Path, tmp: Path, *extra: str) -> str:
    """Runs headless Chromium on ``page`` with its own profile dir; returns stdout."""
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}", *extra, page.resolve().as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout


def render_check(dom: str) -> tuple[int, int]:
    """(figures rendered, figures on the page) from the dumped DOM."""
    tag = re.search(r'<p id="render-check"[^>]*>', dom)
    assert tag, "render-check marker missing: did the page load?"
    rendered = re.search(r'data-rendered="(-?\d+)"', tag.group(0))
    images = re.search(r'data-images="(\d+)"', tag.group(0))
    assert images, f"the page's script did not run: {tag.group(0)}"
    return int(rendered.group(1)), int(images.group(1))


def test_every_figure_renders(report_html: Path, tmp_path: Path) -> None:
    assert render_check(chromium(report_html, tmp_path, "--dump-dom")) == (len(FIGURES), len(FIGURES))


def test_a_broken_image_is_caught(report_html: Path, tmp_path: Path) -> None:
    """The check itself: a corrupted data URI must count as not rendered."""
    page = report_html.read_text()
    broken = tmp_path / "broken.html"
    broken.write_text(page.replace("data:image/png;base64,iVBOR", "data:image/png;base64,AAAAA", 1))
    assert render_check(chromium(broken, tmp_path, "--dump-dom")) == (len(FIGURES) - 1, len(FIGURES))


def test_screenshot_is_not_blank(report_html: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    chromium(report_html, tmp_path, f"--screenshot={shot}", "--window-size=1200,3000")
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)  # (H, W) grey levels
    assert pixels.shape == (3000, 1200)
    assert (pixels < 200).mean() > 0.02  # text, axes and lines cover a visible share of the page
    assert pixels.std() > 20

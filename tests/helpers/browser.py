"""Debian's Chromium driven by Playwright, for the tests of the results page."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def chromium() -> str:
    """The Chromium executable; skips the test without it (fails it in CI, where it is required)."""
    path = os.environ.get("SURVEY_CLASSIFIER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    problem = None
    if not Path(path).exists():
        problem = f"no Chromium at {path} (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "the playwright package is not installed (pip install playwright)"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"the browser test is required in CI: {problem}")
        pytest.skip(problem)
    return path


def keep_screenshot(shot: Path) -> None:
    """Copy a screenshot into $SURVEY_CLASSIFIER_SCREENSHOTS, when set, for people to look at."""
    keep = os.environ.get("SURVEY_CLASSIFIER_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / shot.name)

"""Installing a real plugin distribution onto a path: a dist-info with its entry points, no pip."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["EXAMPLE_PLUGIN", "install_example_plugin"]

#: The example plugin of docs/plugins.md (stages ``compactness`` and ``tuned_compactness``).
EXAMPLE_PLUGIN = Path(__file__).resolve().parents[2] / "docs" / "examples" / "compactness"


def install_example_plugin(site: Path, monkeypatch) -> Path:
    """Make the example plugin's stages installed entry points for this test (and its subprocesses)."""
    info = site / "survey_classifier_compactness-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: survey-classifier-compactness\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(
        "[survey_classifier.stages]\n"
        "compactness = sc_compactness.stage:Compactness\n"
        "tuned_compactness = sc_compactness.tuned:TunedCompactness\n"
    )
    for folder in (site, EXAMPLE_PLUGIN):
        monkeypatch.syspath_prepend(str(folder))
    paths = [str(site), str(EXAMPLE_PLUGIN), os.environ.get("PYTHONPATH")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, paths)))
    return site

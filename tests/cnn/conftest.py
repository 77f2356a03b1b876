"""Fixtures shared by the CNN tests."""

from __future__ import annotations

import pytest
from astropy.table import Table


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory, data_dir):
    """16 FR I and 16 FR II confident MiraBest sources, as ECSV (test_cnn_train has its own)."""
    labels = Table.read(data_dir / "mirabest" / "labels.csv", format="ascii.csv")
    rows = [labels[(labels["confidence"] == "confident") & (labels["fr_class"] == name)][:16]
            for name in ("FRI", "FRII")]
    table = Table({
        "path": [str(data_dir / "mirabest" / "fits" / f) for part in rows for f in part["file"]],
        "fr": [str(v) for part in rows for v in part["fr_class"]],
        "ra_deg": [float(v) for part in rows for v in part["ra_deg"]],
        "dec_deg": [float(v) for part in rows for v in part["dec_deg"]],
    })
    path = tmp_path_factory.mktemp("catalogue") / "tiny.ecsv"
    table.write(path)
    return path

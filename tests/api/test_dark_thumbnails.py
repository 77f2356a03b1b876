"""Issue #20, item 4: the thumbnails of cutouts 918, 951 and 966 after MiraBest is classified into a fresh database.

Those node members were drawn as black squares by the page's old peak-anchored stretch. Here
the whole catalogue goes through ``classify`` into a new SQLite file, as in the report, and
the page's own picture endpoint draws them at the sizes the page asks for.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from survey_classifier.api import create_app
from survey_classifier.cli import main
from survey_classifier.db import make_engine
from survey_classifier.db.models import CutoutRow
from survey_classifier.io.fits import read_cutout
from survey_classifier.islands import kept_islands
from survey_classifier.stats import clipped_background

#: The ids of the report and the files they are (rows 918, 951 and 966 of labels.csv).
REPORTED = {
    918: "210_182.155+061.352_0.2747_0113.52.fits",
    951: "210_213.870+001.097_0.1646_0112.04.fits",
    966: "210_226.114+033.263_0.3672_0107.46.fits",
}
#: Thumbnail sides the page asks for (results grid and node members, result rows).
PAGE_SIZES = (112, 48)


@pytest.fixture(scope="module")
def fresh_db(tmp_path_factory, mirabest_dir):
    url = f"sqlite:///{tmp_path_factory.mktemp('fresh') / 'mirabest.db'}"
    result = CliRunner().invoke(main, ["classify", str(mirabest_dir / "labels.csv"), "--base-dir",
                                       str(mirabest_dir / "fits"), "--db", url, "--stages", "measure", "--quiet"],
                                catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    return url


@pytest.fixture(scope="module")
def client(fresh_db):
    with TestClient(create_app(fresh_db)) as client:
        yield client


def _emission_on_thumbnail(path: str, size: int) -> np.ndarray:
    """The islands of the cutout (the ``measure`` stage's), as the thumbnail's pixels (north up)."""
    data = read_cutout(path).data.astype(float)
    background, noise = clipped_background(data[np.isfinite(data)])
    islands = kept_islands(np.nan_to_num(data - background), noise)[0]
    shrunk = Image.fromarray(islands[::-1].astype(np.uint8) * 255).resize((size, size), Image.Resampling.BOX)
    return np.asarray(shrunk) > 127


@pytest.mark.parametrize("cutout_id", sorted(REPORTED))
def test_reported_thumbnails_show_the_source(client, fresh_db, cutout_id):
    engine = make_engine(fresh_db)
    with engine.connect() as connection:
        path = connection.execute(select(CutoutRow.path).where(CutoutRow.id == cutout_id)).scalar_one()
    engine.dispose()
    assert Path(path).name == REPORTED[cutout_id]
    for size in PAGE_SIZES:
        response = client.get(f"/cutouts/{cutout_id}/image.png", params={"size": size})  # the page's default colours
        assert response.status_code == 200, response.text
        grey = np.asarray(Image.open(io.BytesIO(response.content)).convert("L"), dtype=float)
        assert grey.shape == (size, size)
        emission = _emission_on_thumbnail(path, size)
        assert emission.sum() >= 10
        # the old stretch drew cutout 918's islands at a median grey of 16-20 (black);
        # now 56-77 for all three, while the noise around them stays black
        assert np.median(grey[emission]) >= 40, (size, np.median(grey[emission]))
        assert np.median(grey[~emission]) <= 8
        assert grey.max() >= 150

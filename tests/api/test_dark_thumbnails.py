"""Issue #20, item 4: no thumbnail on the page is a black square once MiraBest is classified into a fresh database.

Those node members were drawn as black squares by the page's old peak-anchored stretch. Here
the whole catalogue goes through ``classify`` (``measure`` and the default SOM) into a new
SQLite file, as in the report, and the page's own picture endpoints draw them: the
thumbnails at the sizes the page asks for, and each source in its neuron's frame, which
the SOM view now shows for a node's members. Then every cutout of the catalogue: each
thumbnail shows something, and each member picture of the SOM view too, because a source too
faint for the map's preparation (an empty prepared image, drawn black before) is no longer
placed on the map but recorded with the reason.
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
from survey_classifier.api.inspect import load_map
from survey_classifier.cli import main
from survey_classifier.db import make_engine
from survey_classifier.db.models import CutoutRow, ErrorRow, SOMPlacementRow
from survey_classifier.io.fits import read_cutout
from survey_classifier.islands import kept_islands
from survey_classifier.preprocess import PreprocessConfig
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
                                       str(mirabest_dir / "fits"), "--db", url, "--stages", "measure,som", "--quiet"],
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


def _placed(url: str, cutout_id: int):
    """Path, SOM model, angle and flip of the cutout, as stored."""
    engine = make_engine(url)
    with engine.connect() as connection:
        path = connection.execute(select(CutoutRow.path).where(CutoutRow.id == cutout_id)).scalar_one()
        placement = connection.execute(
            select(SOMPlacementRow.model_ref, SOMPlacementRow.angle_deg, SOMPlacementRow.flip)
            .where(SOMPlacementRow.cutout_id == cutout_id)
        ).one()
        som = load_map(engine, placement.model_ref)
    engine.dispose()
    return path, som, placement


@pytest.mark.parametrize("cutout_id", sorted(REPORTED))
def test_reported_thumbnails_show_the_source(client, fresh_db, cutout_id):
    path, _, _ = _placed(fresh_db, cutout_id)
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


@pytest.mark.parametrize("cutout_id", sorted(REPORTED))
def test_reported_members_in_their_neurons_frame_show_the_lobes(client, fresh_db, cutout_id):
    """The faint emission of the prepared source is visible beside its core, not a dot on black."""
    path, som, placement = _placed(fresh_db, cutout_id)
    assert placement.model_ref == "som-mirabest:3"  # the default map of a fresh database
    prepared = read_cutout(path).preprocessed(PreprocessConfig.from_dict(som.preprocess_dict_))
    turned = som.rotate_into_frame(prepared, placement.angle_deg, placement.flip)[::-1]  # north up, as the PNG
    peak = turned.max()
    faint = (turned >= 0.01 * peak) & (turned <= 0.2 * peak)  # emission at 1-20 % of the core
    assert faint.sum() >= 30
    size = int(som.image_size_)
    response = client.get(f"/cutouts/{cutout_id}/som.png", params={"size": size, "cmap": "gray"})
    assert response.status_code == 200, response.text
    shown = np.asarray(Image.open(io.BytesIO(response.content)))[..., 0] / 255.0
    # divided by the peak (the pictures until December 2026) the median was 0.03; now 0.14-0.17
    assert np.median(shown[faint]) >= 0.1
    assert shown.max() == 1.0 and np.median(shown[turned <= 0]) == 0.0


#: MiraBest cutouts whose brightest pixel is below 5 sigma (diffuse emission at 4.3-4.8 sigma): the islands
#: preparation of som-mirabest 3 keeps nothing of them. Found by preparing all 1027 (2026-12-03).
TOO_FAINT = {
    394: "110_177.417+038.195_0.1254_0066.80.fits",
    400: "110_181.597+042.580_0.0833_0110.47.fits",
    905: "210_176.904+020.862_0.1313_0087.61.fits",
}


def _stored(url: str):
    engine = make_engine(url)
    with engine.connect() as connection:
        paths = dict(connection.execute(select(CutoutRow.id, CutoutRow.path)).all())
        placed = set(connection.execute(select(SOMPlacementRow.cutout_id)).scalars())
        errors = {row.cutout_id: row for row in connection.execute(
            select(ErrorRow.cutout_id, ErrorRow.stage, ErrorRow.error_type, ErrorRow.message)).all()}
    engine.dispose()
    return paths, placed, errors


def test_sources_too_faint_for_the_map_are_recorded_not_placed(fresh_db):
    paths, placed, errors = _stored(fresh_db)
    assert len(paths) == 1027
    unplaced = set(paths) - placed
    assert unplaced == set(TOO_FAINT), sorted(unplaced)
    for cutout_id, name in TOO_FAINT.items():
        assert Path(paths[cutout_id]).name == name
        error = errors[cutout_id]
        assert (error.stage, error.error_type) == ("som", "CutoutFailure")
        assert "no island of emission reaches the 5 sigma seed level" in error.message
        peak = float(error.message.split("brightest pixel ")[1].split(" sigma")[0])
        assert 4.0 < peak < 5.0, error.message
        assert "mJy/beam" in error.message  # BUNIT JY/BEAM, in the unit FIRST noise is quoted in
    assert set(errors) == set(TOO_FAINT)  # measure and the SOM worked on every other cutout


def _grey(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("L"), dtype=float)


def test_no_thumbnail_or_member_picture_of_the_catalogue_is_black(client, fresh_db):
    """Every cutout's thumbnail, and every placed cutout's picture in its neuron's frame, shows its source."""
    paths, placed, _ = _stored(fresh_db)
    black_thumbnails, black_members = [], []
    for cutout_id in sorted(paths):
        if _grey(client.get(f"/cutouts/{cutout_id}/image.png", params={"size": 112})).max() < 150:
            black_thumbnails.append(cutout_id)
        if cutout_id in placed:
            member = _grey(client.get(f"/cutouts/{cutout_id}/som.png", params={"size": 64}))
            if member.max() < 150 or (member > 40).sum() < 3:
                black_members.append(cutout_id)
    assert black_thumbnails == []
    assert black_members == []

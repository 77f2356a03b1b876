"""Cone searches through the HEALPix column agree with brute force everywhere on the sky."""

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from sqlalchemy import select, text

from survey_classifier.db import downgrade, make_engine, upgrade
from survey_classifier.db._healpix import healpix_of
from survey_classifier.db.models import CutoutRow
from survey_classifier.db.store import upsert_cutouts
from survey_classifier.errors import SurveyClassifierError
from survey_classifier.query import cone_search, query_results


def _random_sky(n, seed):
    rng = np.random.default_rng(seed)
    ra = rng.uniform(0, 360, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    # crowd some sources near the poles and the RA=0 meridian, where cone searches go wrong first
    ra[:200], dec[:200] = rng.uniform(0, 360, 200), rng.uniform(85, 90, 200)
    ra[200:400], dec[200:400] = rng.uniform(-3, 3, 200) % 360, rng.uniform(-5, 5, 200)
    return ra, dec


@pytest.fixture(scope="module")
def sky(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('sky') / 'sky.db'}"
    upgrade(url)
    engine = make_engine(url)
    ra, dec = _random_sky(6000, 1)
    rows = [{"path": f"/sky/{i}.fits", "sha256": "0" * 64, "ra_deg": float(r), "dec_deg": float(d)}
            for i, (r, d) in enumerate(zip(ra, dec))]
    rows.append({"path": "/sky/nowcs.fits", "sha256": "1" * 64, "ra_deg": None, "dec_deg": None})
    with engine.begin() as connection:
        ids = upsert_cutouts(connection, rows)
    yield engine, np.array([ids[f"/sky/{i}.fits"] for i in range(len(ra))]), SkyCoord(ra * u.deg, dec * u.deg)
    engine.dispose()


def test_pixels_are_stored_with_each_position(sky):
    engine, ids, coords = sky
    with engine.connect() as connection:
        stored = dict(connection.execute(select(CutoutRow.id, CutoutRow.healpix)).all())
    expected = healpix_of(coords.ra.deg, coords.dec.deg)
    assert [stored[i] for i in ids] == expected.tolist()
    assert None in stored.values()  # the cutout without a position has no pixel


@pytest.mark.parametrize(
    "ra, dec, radius",
    [(150.0, 30.0, 1.0), (0.2, 0.0, 2.0), (359.9, -1.0, 0.5), (10.0, 89.5, 3.0), (200.0, -89.9, 5.0),
     (45.0, 10.0, 0.01), (300.0, 60.0, 25.0), (120.0, -40.0, 120.0), (360.0, 0.0, 1.5)],
)
def test_cone_search_matches_brute_force(sky, ra, dec, radius):
    engine, ids, coords = sky
    expected = set(ids[SkyCoord(ra * u.deg, dec * u.deg).separation(coords).deg <= radius].tolist())
    with engine.connect() as connection:
        found = cone_search(connection, ra, dec, radius)
    assert set(found) == expected


def test_pagination_of_a_wide_cone_is_exact(sky, monkeypatch):
    import survey_classifier.query

    engine, ids, coords = sky
    centre = SkyCoord(100 * u.deg, 20 * u.deg)
    expected = sorted(ids[centre.separation(coords).deg <= 70].tolist())
    monkeypatch.setattr(survey_classifier.query, "_MAX_ID_LIST", 500)
    assert len(expected) > 500  # beyond the id-list limit: paged after the exact cut
    pages = [
        query_results(engine, ra=100, dec=20, radius=70, limit=300, offset=o) for o in range(0, len(expected), 300)
    ]
    assert [i for page in pages for i in page["cutout_id"]] == expected


@pytest.mark.parametrize("ra, dec, radius", [(np.nan, 0, 1), (10, np.inf, 1), (10, 0, 0), (-5, 0, 1), (10, 95, 1)])
def test_bad_cones_are_refused(sky, ra, dec, radius):
    engine, _, _ = sky
    with engine.connect() as connection, pytest.raises(SurveyClassifierError, match="cone search"):
        cone_search(connection, ra, dec, radius)


def test_migration_fills_the_pixels_of_existing_cutouts(sqlite_url):
    upgrade(sqlite_url, "0002")
    engine = make_engine(sqlite_url)
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO cutouts (path, ra_deg, dec_deg, updated_at) VALUES "
                 "('/a.fits', 150.1, 2.2, '2026-01-01'), ('/b.fits', NULL, NULL, '2026-01-01')")
        )
    upgrade(sqlite_url)
    with engine.connect() as connection:
        stored = dict(connection.execute(select(CutoutRow.path, CutoutRow.healpix)).all())
    assert stored == {"/a.fits": int(healpix_of([150.1], [2.2])[0]), "/b.fits": None}
    downgrade(sqlite_url, "0002")
    engine.dispose()

"""Reading results back: positions, cone search, filters and exports."""

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table

from survey_classifier.cutout import CutoutSource
from survey_classifier.db import make_engine, upgrade
from survey_classifier.errors import SurveyClassifierError
from survey_classifier.formats import EXPORT_FORMATS, write_table
from survey_classifier.pipeline import run_pipeline
from survey_classifier.query import query_errors, query_results
from survey_classifier.stages.registry import load_stage


@pytest.fixture(scope="module")
def filled(tmp_path_factory, mirabest_files):
    """120 real mirabest cutouts measured into a SQLite database."""
    url = f"sqlite:///{tmp_path_factory.mktemp('q') / 'q.db'}"
    upgrade(url)
    engine = make_engine(url)
    sources = [CutoutSource(str(p)) for p in mirabest_files[::8][:120]]
    summary = run_pipeline(sources, [load_stage("measure")], engine)
    assert summary.n_processed == len(sources)
    yield engine, summary
    engine.dispose()


def test_positions_are_the_wcs_centres(filled, mirabest_dir):
    engine, _ = filled
    table = query_results(engine)
    labels = Table.read(mirabest_dir / "labels.csv")
    by_file = {row["file"]: row for row in labels}
    stored = SkyCoord(table["ra_deg"], table["dec_deg"])
    catalogue = SkyCoord(
        [by_file[p.rsplit("/", 1)[1]]["ra_deg"] for p in table["path"]] * u.deg,
        [by_file[p.rsplit("/", 1)[1]]["dec_deg"] for p in table["path"]] * u.deg,
    )
    # labels.csv gives positions to 1e-3 deg; the WCS centre is the exact value
    dra = (stored.ra - catalogue.ra).wrap_at(180 * u.deg).deg * np.cos(stored.dec.rad)
    assert np.all(np.abs(dra) <= 0.0011) and np.all(np.abs((stored.dec - catalogue.dec).deg) <= 0.0011)
    assert "measure_peak_flux_jy" in table.colnames and np.all(table["measure_peak_flux_jy"] > 0)


def test_positions_match_astropy_wcs_within_one_arcsec(filled):
    """Independent check with plain astropy: the world position of the central pixel."""
    import warnings

    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning

    engine, _ = filled
    table = query_results(engine)
    for row in table[::10]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            header = fits.getheader(row["path"])
            wcs = WCS(header)
        ra, dec = wcs.pixel_to_world_values((header["NAXIS1"] - 1) / 2, (header["NAXIS2"] - 1) / 2)
        stored = SkyCoord(row["ra_deg"] * u.deg, row["dec_deg"] * u.deg)
        separation = SkyCoord(ra * u.deg, dec * u.deg).separation(stored)
        assert separation.arcsec < 1.0, row["path"]


@pytest.mark.parametrize("radius", [0.5, 3.0, 20.0])
def test_cone_search_returns_exactly_the_sources_inside(filled, radius):
    engine, _ = filled
    everything = query_results(engine)
    coords = SkyCoord(everything["ra_deg"], everything["dec_deg"])
    centre = coords[len(coords) // 3]
    expected = set(everything["cutout_id"][centre.separation(coords).deg <= radius])
    found = query_results(engine, ra=centre.ra.deg, dec=centre.dec.deg, radius=radius)
    assert set(found["cutout_id"]) == expected
    assert len(expected) >= 1
    assert np.all(found["separation_arcsec"] <= radius * 3600)


def test_cone_search_across_ra_zero(filled):
    engine, _ = filled
    everything = query_results(engine)
    coords = SkyCoord(everything["ra_deg"], everything["dec_deg"])
    centre = SkyCoord(0.5 * u.deg, 0.0 * u.deg)
    expected = set(everything["cutout_id"][centre.separation(coords).deg <= 30])
    found = query_results(engine, ra=0.5, dec=0.0, radius=30)
    assert set(found["cutout_id"]) == expected


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"ra": 400.0, "dec": 0.0, "radius": 1.0}, "RA must be in"),
        ({"ra": 10.0, "dec": -91.0, "radius": 1.0}, "Dec must be in"),
        ({"ra": 10.0, "dec": 0.0, "radius": -1.0}, "radius must be in"),
        ({"ra": 10.0, "dec": 0.0}, "needs all of"),
        ({"label": "FRI"}, "no classification results"),
        ({"stage": "cnn"}, "no results of stage 'cnn'"),
        ({"run_id": 999}, "no run with id 999"),
    ],
)
def test_bad_queries_are_refused_clearly(filled, kwargs, match):
    engine, _ = filled
    with pytest.raises(SurveyClassifierError, match=match):
        query_results(engine, **kwargs)


def test_run_filter_and_limit(filled):
    engine, summary = filled
    assert len(query_results(engine, run_id=summary.run_id)) == summary.n_cutouts
    assert len(query_results(engine, limit=7)) == 7


@pytest.mark.parametrize("fmt, suffix", [("csv", ".csv"), ("ecsv", ".ecsv"), ("votable", ".xml"), ("fits", ".fits")])
def test_exports_read_back(filled, tmp_path, fmt, suffix):
    engine, _ = filled
    table = query_results(engine)
    path = tmp_path / f"out{suffix}"
    assert write_table(table, str(path)) == fmt
    back = Table.read(path, format=EXPORT_FORMATS[fmt].astropy_format)
    assert len(back) == len(table)
    assert np.allclose(back["ra_deg"], table["ra_deg"]) and np.allclose(back["dec_deg"], table["dec_deg"])
    assert np.allclose(back["measure_peak_flux_jy"], table["measure_peak_flux_jy"])


def test_errors_table_empty_for_a_clean_run(filled):
    engine, _ = filled
    assert len(query_errors(engine)) == 0

"""The Virtual Observatory face of the service, called by pyvo over real HTTP as TOPCAT would call it."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.io.votable import parse
from helpers.server import serving

from survey_classifier.query import query_results

pyvo = pytest.importorskip("pyvo", reason="pyvo is in the [test] extra")


@pytest.fixture(scope="module")
def base_url(app):
    with serving(app) as url:
        yield url


@pytest.fixture(scope="module")
def sources(service_db):
    table = query_results(service_db["engine"])
    return table, SkyCoord(table["ra_deg"], table["dec_deg"])


@pytest.mark.parametrize("index, radius_deg", [(4, 0.001), (4, 6.0), (11, 9.5), (20, 3.0)])
def test_pyvo_cone_search_finds_exactly_the_sources_in_the_cone(base_url, sources, index, radius_deg):
    table, coords = sources
    centre = coords[index]
    expected = sorted(table["cutout_id"][centre.separation(coords).deg <= radius_deg].tolist())
    service = pyvo.dal.SCSService(f"{base_url}/scs")
    results = service.search(pos=centre, radius=radius_deg * u.deg)
    assert sorted(int(record.id) for record in results) == expected and expected
    found = results.to_table()
    ra_field = results.getdesc("ra_deg")
    assert ra_field.ucd == "POS_EQ_RA_MAIN" and str(ra_field.unit) == "deg"
    assert results.getdesc("dec_deg").ucd == "POS_EQ_DEC_MAIN"
    assert results.getdesc("cutout_id").ucd == "ID_MAIN"
    assert results.getdesc("peak_probability").ucd == "stat.probability"
    assert str(results.getdesc("separation_arcsec").unit) == "arcsec"
    assert results.getdesc("measure_peak_flux_jy").unit == u.Jy / u.beam
    assert np.all(found["separation_arcsec"] <= radius_deg * 3600 + 1e-6)
    first = results[0]
    assert first.pos.separation(coords[list(table["cutout_id"]).index(int(first.id))]).arcsec < 1e-6
    # no path on the server in any answer: ids and links only
    assert "path" not in found.colnames
    assert all(str(url).startswith(f"{base_url}/cutouts/") for url in found["access_url"])


def test_each_row_links_to_its_fits_file(base_url, sources, service_db):
    table, coords = sources
    results = pyvo.dal.SCSService(f"{base_url}/scs").search(pos=coords[7], radius=0.5 * u.arcsec)
    assert len(results) == 1
    record = results[0]
    cutout_id = int(record.id)
    assert record.getdataformat() == "application/fits"
    path = str(table["path"][list(table["cutout_id"]).index(cutout_id)])
    with warnings.catch_warnings():  # the MiraBest headers carry quirks astropy reports
        warnings.simplefilter("ignore")
        with fits.open(io.BytesIO(record.getdataset().read())) as downloaded, fits.open(path) as original:
            assert np.array_equal(downloaded[0].data, original[0].data, equal_nan=True)
            assert downloaded[0].header["CRVAL1"] == original[0].header["CRVAL1"]


def test_verbosity_and_metadata_query(base_url, sources):
    _, coords = sources
    service = pyvo.dal.SCSService(f"{base_url}/scs")
    brief = service.search(pos=coords[4], radius=6.0, verbosity=1).to_table()
    assert brief.colnames == ["cutout_id", "ra_deg", "dec_deg", "access_url", "access_format"]
    everything = service.search(pos=coords[4], radius=6.0, verbosity=3).to_table()
    assert {"measure_asymmetry", "som_node_x", "anomaly_score", "wcs_ra_deg"} <= set(everything.colnames)
    assert not any("path" in name for name in everything.colnames)
    empty = service.search(pos=coords[4], radius=0.0)
    assert len(empty) == 0 and "peak_label" in empty.fieldnames


@pytest.mark.parametrize(
    "params, words",
    [
        ({"RA": "abc", "DEC": "0", "SR": "1"}, "RA: 'abc' is not an angle"),
        ({"RA": "10", "DEC": "-95", "SR": "1"}, "DEC: declination must be in [-90, 90]"),
        ({"RA": "10", "DEC": "0", "SR": "40"}, "SR: a cone radius must be above 0 and at most 10 degrees"),
        ({"RA": "10", "DEC": "0"}, "missing parameter(s) SR"),
        ({"RA": "10", "DEC": "0", "SR": "1", "VERB": "7"}, "VERB must be an integer from 1 to 3"),
    ],
)
def test_bad_input_gets_the_error_votable(client, params, words):
    response = client.get("/scs", params=params)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/xml")
    votable = parse(io.BytesIO(response.content))
    errors = [info for info in votable.infos if info.name == "Error"]
    assert len(errors) == 1 and words in errors[0].value
    with pytest.raises(pyvo.dal.DALQueryError, match="not an angle|declination|radius|missing|VERB"):
        pyvo.dal.SCSResults(votable)


def test_fits_download_refusals(client, service_db, tmp_path):
    assert client.get("/cutouts/999999/fits").status_code == 404
    cutout_id = sorted(service_db["measured"])[0]
    response = client.get(f"/cutouts/{cutout_id}/fits")
    assert response.status_code == 200 and response.headers["content-type"] == "application/fits"
    assert response.headers["content-disposition"].endswith(f'"cutout-{cutout_id}.fits"')

"""The same API over PostgreSQL: filters, cone search and refusals behave as on SQLite."""

import pytest
from astropy.coordinates import SkyCoord

from survey_classifier.cutout import CutoutSource
from survey_classifier.db import make_engine, upgrade
from survey_classifier.pipeline import run_pipeline
from survey_classifier.query import query_results
from survey_classifier.stages.registry import load_stage


@pytest.mark.postgres
def test_api_on_postgres(postgres_url, mirabest_files):
    from fastapi.testclient import TestClient

    from survey_classifier.api import create_app

    upgrade(postgres_url)
    engine = make_engine(postgres_url)
    run_pipeline([CutoutSource(str(p)) for p in mirabest_files[::60][:15]], [load_stage("measure")], engine)
    table = query_results(engine)
    coords = SkyCoord(table["ra_deg"], table["dec_deg"])
    with TestClient(create_app(engine=engine)) as client:
        for i in (0, 7):
            expected = sorted(table["cutout_id"][coords[i].separation(coords).deg <= 10].tolist())
            response = client.get("/results", params={"ra": coords[i].ra.deg, "dec": coords[i].dec.deg, "radius": 10})
            assert [r["cutout_id"] for r in response.json()["rows"]] == expected
        hostile = ({"label": "x' OR 1=1 --"}, {"after_id": 2**31}, {"run": 2**40})
        for params in hostile:
            assert client.get("/results", params=params).status_code == 422
        # a position that fits the schema (text) but is no angle: 400, said
        refused = client.get("/results", params={"ra": "1e400", "dec": 0, "radius": 1})
        assert refused.status_code == 400 and "ra: must be a finite angle" in refused.json()["detail"]
        assert client.get(f"/cutouts/{2**31 - 1}").status_code == 404
        assert client.get(f"/cutouts/{2**31 - 1}/image.png").status_code == 404
        assert client.get(f"/cutouts/{2**63}").status_code == 422
        assert client.get(f"/models/{2**31 - 1}").status_code == 404
        assert client.get("/results", params={"after_id": 2**31 - 1}).json()["rows"] == []
        assert client.get("/anomalies").status_code == 400  # no anomaly stage has run: said, not a 500
        # sorted by a stage's result column, largest first, a page at a time, filtered on the same stage
        flux = dict(zip(table["cutout_id"].tolist(), table["measure_peak_flux_jy"].tolist()))
        brightest = sorted(flux, key=lambda i: (-flux[i], i))
        page = {"sort": "-measure_peak_flux_jy", "stage": "measure", "limit": 4}
        assert [r["cutout_id"] for r in client.get("/results", params={**page, "offset": 4}).json()["rows"]] == (
            brightest[4:8])
    engine.dispose()

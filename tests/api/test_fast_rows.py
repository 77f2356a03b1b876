"""The JSON pages of /results, encoded from the light frame, are exactly those the astropy table gave."""

from __future__ import annotations

import json

import pytest

from survey_classifier.api.app import _respond
from survey_classifier.query import query_results

QUERIES = [
    {"limit": 100},
    {"limit": 7, "offset": 5},
    {"stage": "som", "limit": 50},
    {"sort": "anomaly_score", "descending": True, "limit": 10},
    {"min_probability": 0.2, "limit": 100},
]


def _body(service_db, kwargs: dict, *, as_frame: bool, columns=None) -> dict:
    table = query_results(service_db["engine"], as_frame=as_frame, **kwargs)
    response = _respond(table, "json", "results", limit=kwargs.get("limit"), offset=kwargs.get("offset", 0),
                        columns=columns, keyset="sort" not in kwargs)
    return json.loads(response.body)


@pytest.mark.parametrize("kwargs", QUERIES, ids=lambda k: ",".join(k))
def test_frame_json_is_the_table_json(service_db, kwargs):
    fast = _body(service_db, kwargs, as_frame=True)
    slow = _body(service_db, kwargs, as_frame=False)
    assert fast == slow
    assert json.dumps(fast, sort_keys=True) == json.dumps(slow, sort_keys=True)  # 1 and 1.0 told apart


def test_cone_and_column_choice_alike(service_db):
    engine = service_db["engine"]
    first = query_results(engine, limit=1)
    ra, dec = float(first["ra_deg"][0]), float(first["dec_deg"][0])
    kwargs = {"ra": ra, "dec": dec, "radius": 3.0, "limit": 100}
    fast = _body(service_db, kwargs, as_frame=True)
    assert fast["count"] >= 1 and fast["rows"][0]["separation_arcsec"] < 1.0
    assert json.dumps(fast) == json.dumps(_body(service_db, kwargs, as_frame=False))
    chosen = "cutout_id,file_name,fits_url,som_*"
    assert json.dumps(_body(service_db, kwargs, as_frame=True, columns=chosen)) == json.dumps(
        _body(service_db, kwargs, as_frame=False, columns=chosen))


def test_nulls_booleans_and_floats_kept(service_db):
    """The page holds nulls, booleans and floats, and each comes out as the table path wrote it."""
    fast = _body(service_db, {"limit": 100}, as_frame=True)
    values = [v for row in fast["rows"] for v in row.values()]
    assert None in values
    assert any(isinstance(v, bool) for v in values)
    assert any(isinstance(v, float) for v in values)
    units = {c["name"]: c["unit"] for c in fast["columns"]}
    assert units["ra_deg"] == "deg"
    assert fast == _body(service_db, {"limit": 100}, as_frame=False)

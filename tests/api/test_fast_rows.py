"""The JSON pages of /results, encoded from the light frame, are exactly those the astropy table gave.

And the parts of the fast path that could drift from the slow one: the
rule that types a column, and the prepared cone statements.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord

from survey_classifier._frame import Frame, frame_column
from survey_classifier.api.app import _respond
from survey_classifier.query import _cone_candidates, cone_search, query_results

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


def test_cone_statement_finds_what_exact_separations_find(service_db):
    """The prepared cone statements (ranges as parameters, unused slots empty) on the real positions."""
    engine = service_db["engine"]
    everything = query_results(engine, as_frame=True)
    ids = np.array(everything["cutout_id"].values)
    coords = SkyCoord(everything["ra_deg"].values * u.deg, everything["dec_deg"].values * u.deg)
    centres = [*coords[::3], SkyCoord(0.01 * u.deg, 0 * u.deg), SkyCoord(359.99 * u.deg, 5 * u.deg),
               SkyCoord(123 * u.deg, 89.9 * u.deg), SkyCoord(10 * u.deg, -60 * u.deg)]
    slots, found_some = set(), 0
    with engine.connect() as connection:
        for radius in (0.01, 0.5, 3.0, 10.0, 40.0, 120.0):
            for centre in centres:
                ra, dec = centre.ra.deg, centre.dec.deg
                inside = centre.separation(coords).deg <= radius
                found = cone_search(connection, ra, dec, radius)
                assert sorted(found) == sorted(ids[inside].tolist()), (ra, dec, radius)
                assert np.allclose([found[i] for i in ids[inside].tolist()], centre.separation(coords[inside]).deg,
                                   rtol=0, atol=1e-10)
                slots.add(len(_cone_candidates(ra, dec, radius, "id")[1]) // 2)
                found_some += bool(found)
    assert len(slots) >= 3 and found_some >= len(centres)  # several statements used, most cones not empty


@pytest.mark.parametrize("values, text, kind, shown", [
    ([1, 2, None], False, "i", [1, 2, None]),
    ([1, 2.5, None], False, "f", [1.0, 2.5, None]),
    ([1.0, float("nan")], False, "f", [1.0, None]),  # NaN kept in the table, null in JSON
    ([True, None, False], False, "b", [True, None, False]),
    ([True, 2], False, "U", ["True", "2"]),
    (["a", 1.5, None], False, "U", ["a", "1.5", None]),
    ([None, None], True, "U", [None, None]),
    ([None, None], False, "f", [None, None]),
    ([np.float64(1.5), 2], False, "f", [1.5, 2.0]),
])
def test_a_column_is_typed_as_the_table_types_it(values, text, kind, shown):
    column = frame_column(values, text=text)
    array = column.array()
    assert column.kind == kind and array.dtype.kind == kind
    assert np.ma.getmaskarray(array).tolist() == [v is None for v in values]
    assert Frame({"x": column}).rows() == [{"x": v} for v in shown]
    assert str(Frame({"x": column}).to_table()["x"].tolist()) == str(np.ma.array(array).tolist())  # NaN, masked


def test_the_first_rows_of_a_frame_are_those_astropy_slices(service_db):
    """What /scs answers when a cone holds more rows than MAXREC: the frame's head, made a table."""
    engine = service_db["engine"]
    head = query_results(engine, limit=20, as_frame=True).head(7).to_table()
    sliced = query_results(engine, limit=20)[:7]
    assert head.colnames == sliced.colnames and len(head) == 7
    for name in head.colnames:
        ours, theirs = head[name], sliced[name]
        assert (type(ours), ours.dtype, ours.unit, ours.description, ours.meta) == (
            type(theirs), theirs.dtype, theirs.unit, theirs.description, theirs.meta), name
        assert str(ours.tolist()) == str(theirs.tolist()), name

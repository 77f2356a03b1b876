"""Labels exported as catalogue tables and imported back (by catalogue id, position or cutout id)."""

from __future__ import annotations

import shutil
from contextlib import nullcontext

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table

from survey_classifier.columns import column_of
from survey_classifier.db import make_engine
from survey_classifier.errors import LabelError
from survey_classifier.formats import write_table
from survey_classifier.io.inputs import read_table
from survey_classifier.labels.catalogue import (
    export_neuron_labels,
    export_source_labels,
    import_labels,
    parse_interesting,
)
from survey_classifier.labels.store import add_neuron_labels, add_source_labels
from survey_classifier.query import query_results

FIELDS = ("catalogue_id", "label_class", "label_interesting", "label_note", "label_author", "label_time")


def _label_some(engine) -> None:
    with engine.begin() as connection:
        add_source_labels(connection, [
            {"cutout_id": 2, "label": "FRII", "interesting": False, "author": "ann"},
            {"cutout_id": 5, "label": "hybrid", "interesting": True, "note": "FR I jet, FR II lobe", "author": "bob"},
            {"cutout_id": 9, "note": "sidelobe stripe?", "author": "ann"},
            {"cutout_id": 9, "label": "artefact", "interesting": False, "author": "ann"},
            {"cutout_id": 11, "interesting": True, "author": "cy"},
        ])
        add_neuron_labels(connection, [
            {"model_ref": "som-mirabest:3", "node_x": 0, "node_y": 3, "label": "FRII", "author": "ann"},
            {"model_ref": "som-mirabest:3", "node_x": 7, "node_y": 1, "label": "FRI", "note": "bent", "author": "bob"},
        ])


def _values(table: Table, names) -> list[tuple]:
    rows = []
    for row in table:
        rows.append(tuple(None if np.ma.is_masked(row[n]) else (row[n].item() if hasattr(row[n], "item") else row[n])
                          for n in names))
    return sorted(rows, key=lambda r: tuple(str(v) for v in r))


@pytest.mark.parametrize("suffix", [".csv", ".ecsv", ".xml", ".fits"])
def test_round_trip_into_another_database(cli, db_url, classified, tmp_path, suffix):
    engine = make_engine(db_url)
    _label_some(engine)
    path = tmp_path / f"labels{suffix}"
    written = cli("labels", "export", "--db", db_url, "-o", path)
    assert written.exit_code == 0 and "wrote 4 source labels" in written.output, written.output
    exported = read_table(path)  # the catalogue reader the import uses
    assert exported["ra_deg"].unit == u.deg
    if suffix == ".fits":  # TCOMMn and TUCDn, which astropy does not read back into the table
        header = fits.getheader(path, 1)
        described = {header[f"TTYPE{i}"]: (header.get(f"TUCD{i}"), header.get(f"TCOMM{i}"))
                     for i in range(1, header["TFIELDS"] + 1)}
    else:
        described = {name: (column_of(exported, name).ucd, column_of(exported, name).description)
                     for name in exported.colnames}
    assert described["label_class"] == ("src.class", "Class a user gave the source (from a list or free text)")
    assert described["label_interesting"][1].startswith("Whether a user found the source interesting: 1 yes")
    assert described["ra_deg"][0] == "pos.eq.ra;meta.main" and described["label_time"][0] == "time.creation"

    fresh = tmp_path / "fresh.db"
    shutil.copy(classified, fresh)
    imported = cli("labels", "import", "--db", f"sqlite:///{fresh}", path)
    assert imported.exit_code == 0, imported.output
    assert "stored 4 source labels (4 by catalogue id)" in imported.output
    fresh_engine = make_engine(f"sqlite:///{fresh}")
    again = export_source_labels(fresh_engine)
    assert _values(again, FIELDS) == _values(export_source_labels(engine), FIELDS)
    assert set(again["label_origin"]) == {f"import:labels{suffix}"}

    twice = cli("labels", "import", "--db", f"sqlite:///{fresh}", path)
    assert "stored 0 source labels" in twice.output and "4 already stored" in twice.output
    assert len(export_source_labels(fresh_engine, history=True)) == 4
    engine.dispose()
    fresh_engine.dispose()


@pytest.mark.parametrize("suffix", [".csv", ".ecsv", ".xml", ".fits"])
def test_a_source_never_judged_interesting_or_not_stays_blank(cli, db_url, classified, tmp_path, suffix):
    """A class without an interesting/not judgement is exported as null (TOPCAT's blank), never as "not interesting"."""
    engine = make_engine(db_url)
    with engine.begin() as connection:
        add_source_labels(connection, [
            {"cutout_id": 3, "label": "FRI", "author": "ann"},
            {"cutout_id": 4, "label": "FRII", "interesting": False, "author": "ann"},
            {"cutout_id": 6, "label": "hybrid", "interesting": True, "author": "ann"},
        ])
    for command in ("labels export", "query"):
        path = tmp_path / f"{command.replace(' ', '-')}{suffix}"
        written = cli(*command.split(), "--db", db_url, "-o", path)
        assert written.exit_code == 0, written.output
        exported = read_table(path)
        judged = {}
        for row in exported:
            if not np.ma.is_masked(row["label_class"]) and row["label_class"]:
                value = row["label_interesting"]
                judged[row["label_class"]] = None if np.ma.is_masked(value) else bool(value)
        assert judged == {"FRI": None, "FRII": False, "hybrid": True}, command
    with fits.open(path, logical_as_bytes=True) if suffix == ".fits" else nullcontext() as hdus:
        if hdus:  # query's boolean: the FITS null logical, a zero byte (TOPCAT and cfitsio show a blank)
            raw = dict(zip(hdus[1].data["label_class"], hdus[1].data["label_interesting"]))
            assert raw["FRI"] in (b"", b"\x00") and raw["FRII"] == b"F" and raw["hybrid"] == b"T"
    engine.dispose()


def test_neuron_labels_round_trip(cli, db_url, classified, tmp_path):
    engine = make_engine(db_url)
    _label_some(engine)
    path = tmp_path / "neurons.ecsv"
    assert cli("labels", "export", "--db", db_url, "--neurons", "-o", path).exit_code == 0
    fresh = tmp_path / "fresh.db"
    shutil.copy(classified, fresh)
    imported = cli("labels", "import", "--db", f"sqlite:///{fresh}", path)
    assert "stored 2 neuron labels" in imported.output, imported.output
    names = ("model_ref", "node_x", "node_y", "label", "note", "label_author", "label_time")
    assert _values(export_neuron_labels(make_engine(f"sqlite:///{fresh}")), names) == _values(
        export_neuron_labels(engine), names)
    engine.dispose()


def test_import_by_position_in_sexagesimal_and_arcminutes(db_engine, tmp_path):
    results = query_results(db_engine)
    chosen = results[[3, 8, 20]]
    coords = SkyCoord(chosen["ra_deg"], chosen["dec_deg"], unit="deg")
    table = Table()
    table["RAJ2000"] = coords.ra.to_string(unit=u.hourangle, sep=":", precision=3)
    table["DEJ2000"] = (coords.dec + 2 * u.arcsec).to_string(unit=u.deg, sep=":", precision=2, alwayssign=True)
    table["class"] = ["WAT", "FRII", ""]
    table["interesting"] = ["yes", "no", "yes"]
    table["comment"] = ["", "", "ring?"]
    path = tmp_path / "mine.csv"
    table.write(path, format="ascii.csv")
    report = import_labels(db_engine, path, author="dee")
    assert report.matched_by == {"position": 3} and not report.unmatched
    labelled = query_results(db_engine, cutout_ids=list(chosen["cutout_id"]))
    assert list(labelled["label_class"].filled("")) == ["WAT", "FRII", ""]
    assert list(labelled["label_interesting"]) == [True, False, True]
    assert list(labelled["label_author"]) == ["dee"] * 3 and labelled["label_note"][2] == "ring?"

    arcmin = Table({"ra": chosen["ra_deg"].quantity.to(u.arcmin), "dec": chosen["dec_deg"].quantity.to(u.arcmin),
                    "interesting": [0, 0, 1]})
    arcmin_path = tmp_path / "arcmin.ecsv"
    arcmin.write(arcmin_path)
    assert import_labels(db_engine, arcmin_path, author="dee").matched_by == {"position": 3}
    far = Table({"ra": [10.0], "dec": [80.0], "interesting": [True]})
    write_table(far, str(tmp_path / "far.csv"))
    report = import_labels(db_engine, tmp_path / "far.csv", radius_arcsec=10)
    assert not report.label_ids and "no cutout within 10 arcsec of RA 10.00000, Dec 80.00000" in report.summary()


def test_unmatched_and_empty_rows_are_reported(db_engine, tmp_path):
    table = Table({"name": ["MB0000", "NOPE", "MB0009", ""], "cutout_id": [0, 0, 0, 4],
                   "label": ["FRI", "FRI", "", "FRII"]})
    path = tmp_path / "ids.csv"
    table.write(path, format="ascii.csv")
    report = import_labels(db_engine, path, author="eve")
    assert report.matched_by == {"catalogue id": 1, "cutout id": 1}
    assert report.n_empty == 1 and report.unmatched == [(2, "no cutout has catalogue id 'NOPE'")]
    assert "2 rows" not in report.summary() and "1 unmatched" in report.summary()


def test_bad_tables_are_refused(db_engine, tmp_path):
    path = tmp_path / "bad.csv"
    Table({"name": ["MB0000"], "interesting": ["perhaps"]}).write(path, format="ascii.csv")
    with pytest.raises(LabelError, match="'interesting' must be true/false, yes/no or 1/0, got 'perhaps'"):
        import_labels(db_engine, path)
    with pytest.raises(LabelError, match="no column 'kind'"):
        import_labels(db_engine, path, columns={"label": "kind"})
    assert parse_interesting(np.int16(1)) is True and parse_interesting(" No ") is False
    assert parse_interesting(np.ma.masked) is None and parse_interesting(float("nan")) is None

"""A user's catalogue in, classified, and every export back out with units, UCDs and descriptions."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.io.votable import parse
from astropy.table import Table
from helpers.stages import peak_classifier

from survey_classifier.columns import column_of
from survey_classifier.db import make_engine, upgrade
from survey_classifier.errors import CatalogueError
from survey_classifier.formats import table_bytes, write_table
from survey_classifier.io.inputs import expand_inputs
from survey_classifier.pipeline import run_pipeline
from survey_classifier.query import query_results
from survey_classifier.stages.registry import load_stage

#: Columns of the user's catalogue that must come back as they went in.
USER_COLUMNS = ("source_id", "redshift", "size", "morphology")


def user_catalogue(mirabest_dir, rows: slice) -> Table:
    """A catalogue as an astronomer writes one: own id, sexagesimal RA/Dec, units and descriptions."""
    labels = Table.read(mirabest_dir / "labels.csv")[rows]
    coords = SkyCoord(labels["ra_deg"] * u.deg, labels["dec_deg"] * u.deg)
    table = Table()
    table["source_id"] = [f"MB{i:04d}" for i in range(len(labels))]
    table["source_id"].description = "MiraBest running number"
    table["RA"] = coords.ra.to_string(unit=u.hourangle, sep=":", precision=2)
    table["DEC"] = coords.dec.to_string(unit=u.deg, sep=":", precision=1, alwayssign=True)
    table["redshift"] = np.asarray(labels["redshift"], dtype=float) * u.dimensionless_unscaled
    table["redshift"].description = "Spectroscopic redshift of the host galaxy"
    table["redshift"].meta["ucd"] = "src.redshift"
    table["size"] = np.asarray(labels["size_arcsec"], dtype=float) * u.arcsec
    table["size"].description = "Largest angular size from the literature"
    table["size"].meta["ucd"] = "phys.angSize"
    table["morphology"] = labels["morphology"]
    table["morphology"].description = "MiraBest morphology flag"
    table["morphology"].meta["ucd"] = "src.morph.type"
    table["fits_file"] = [str(mirabest_dir / "fits" / name) for name in labels["file"]]
    return table


@pytest.fixture(scope="module")
def classified(tmp_path_factory, mirabest_dir):
    """12 MiraBest cutouts named by an ECSV catalogue, measured and classified."""
    folder = tmp_path_factory.mktemp("science")
    catalogue = user_catalogue(mirabest_dir, slice(0, 1027, 86))
    catalogue.write(folder / "catalogue.ecsv")
    url = f"sqlite:///{folder / 'results.db'}"
    upgrade(url)
    engine = make_engine(url)
    sources = expand_inputs(folder / "catalogue.ecsv")
    summary = run_pipeline(sources, [load_stage("measure"), peak_classifier(folder, 0.01)], engine)
    assert summary.n_processed == len(catalogue)
    yield engine, catalogue, folder
    engine.dispose()


def test_the_users_columns_come_back_with_their_units_and_descriptions(classified):
    engine, catalogue, _ = classified
    table = query_results(engine)
    assert table.colnames[:4] == ["cutout_id", "catalogue_id", "ra_deg", "dec_deg"]
    assert table.colnames[4:6] == ["peak_label", "peak_probability"]
    assert list(table["source_id"]) == list(catalogue["source_id"]) == list(table["catalogue_id"])
    assert np.allclose(table["redshift"], catalogue["redshift"])
    assert table["size"].unit == u.arcsec and np.allclose(table["size"], catalogue["size"].value)
    assert table["redshift"].description == "Spectroscopic redshift of the host galaxy"
    assert table["redshift"].meta["ucd"] == "src.redshift"
    assert table["source_id"].meta["ucd"] == "meta.id"
    assert list(table["morphology"]) == list(catalogue["morphology"])
    assert "fits_file" not in table.colnames and "RA" not in table.colnames


def test_catalogue_position_beside_the_wcs_centre(classified):
    engine, catalogue, _ = classified
    table = query_results(engine)
    given = SkyCoord(catalogue["RA"], catalogue["DEC"], unit=(u.hourangle, u.deg))
    assert np.allclose(table["ra_deg"], given.ra.deg, atol=1e-9)
    assert np.allclose(table["dec_deg"], given.dec.deg, atol=1e-9)
    assert np.array_equal(table["catalogue_ra_deg"], table["ra_deg"])  # named for what it is, too
    assert np.array_equal(table["catalogue_dec_deg"], table["dec_deg"])
    centres = SkyCoord(table["wcs_ra_deg"], table["wcs_dec_deg"])
    assert np.allclose(table["position_offset_arcsec"], given.separation(centres).arcsec, atol=1e-6)
    # labels.csv rounds positions to 1e-3 deg: the catalogue and the WCS centre differ by arcseconds
    assert np.all(table["position_offset_arcsec"] < 6.0) and np.any(table["position_offset_arcsec"] > 0.01)
    # the cone search uses the catalogue position: a 0.1-arcsec cone around it finds the source
    first = given[0]
    found = query_results(engine, ra=first.ra.deg, dec=first.dec.deg, radius=0.1 / 3600)
    assert list(found["source_id"]) == [catalogue["source_id"][0]]


def test_every_column_is_described(classified):
    engine, catalogue, _ = classified
    table = query_results(engine)
    for name in table.colnames:
        spec = column_of(table, name)
        if name in USER_COLUMNS:  # as the catalogue described it; nothing invented
            given = catalogue[name]
            assert (spec.unit is None) == (given.unit is None) and u.Unit(spec.unit or "") == (given.unit or 1), name
            assert spec.ucd == given.meta.get("ucd", "meta.id" if name == "source_id" else None), name
            assert spec.description == (given.description or f"Column {name!r} of the input catalogue")
            continue
        assert spec.description and spec.ucd, f"{name} lacks a description or a UCD"
        if table[name].dtype.kind in "fiu" and not spec.ucd.startswith("meta.id"):
            assert spec.unit is not None, f"{name} is a number without a unit or the dimensionless marker"


def test_votable_export_opens_in_astropy_with_everything(classified, tmp_path):
    engine, catalogue, _ = classified
    table = query_results(engine)
    write_table(table, str(tmp_path / "results.vot"))
    votable = parse(tmp_path / "results.vot")
    resource = votable.resources[0]
    assert [c.system for c in resource.coordinate_systems] == ["ICRS"]
    fields = {f.name: f for f in resource.tables[0].fields}
    assert set(fields) == set(table.colnames)
    numeric_kinds = {"double", "float", "long", "int", "short", "unsignedByte"}
    for name, field in fields.items():
        assert field.description and field.ucd, name
        if field.datatype in numeric_kinds and not field.ucd.startswith("meta.id"):
            assert field.unit is not None, f"{name}: no unit and no dimensionless marker"
    assert fields["ra_deg"].ucd == "pos.eq.ra;meta.main" and fields["ra_deg"].ref == "icrs"
    assert fields["dec_deg"].ucd == "pos.eq.dec;meta.main" and fields["dec_deg"].ref == "icrs"
    assert fields["cutout_id"].ucd == "meta.id;meta.main"
    assert str(fields["size"].unit) == "arcsec" and str(fields["measure_las_arcsec"].unit) == "arcsec"
    assert fields["redshift"].unit == u.dimensionless_unscaled and fields["redshift"].ucd == "src.redshift"
    assert fields["peak_probability"].unit == u.dimensionless_unscaled
    back = Table.read(tmp_path / "results.vot")
    assert list(back["source_id"]) == list(catalogue["source_id"])
    assert np.allclose(back["redshift"], catalogue["redshift"])
    assert back["size"].unit == u.arcsec
    assert back["redshift"].description == "Spectroscopic redshift of the host galaxy"


def test_fits_ecsv_and_csv_keep_units_and_descriptions(classified):
    engine, catalogue, _ = classified
    table = query_results(engine)
    hdus = fits.open(io.BytesIO(table_bytes(table, "fits")))
    header = hdus[1].header
    index = {header[f"TTYPE{i}"]: i for i in range(1, header["TFIELDS"] + 1)}
    assert header[f"TUNIT{index['ra_deg']}"] == "deg"
    assert header[f"TUCD{index['ra_deg']}"] == "pos.eq.ra;meta.main"
    assert "Spectroscopic redshift" in header[f"TCOMM{index['redshift']}"]
    assert header[f"TUNIT{index['size']}"] == "arcsec"
    assert header[f"TUNIT{index['peak_probability']}"] == ""  # dimensionless, said explicitly
    assert all(f"TCOMM{i}" in header for i in index.values())
    for fmt in ("ecsv", "csv"):
        back = Table.read(io.BytesIO(table_bytes(table, fmt)), format="ascii.ecsv")
        assert back["size"].unit == u.arcsec and back["ra_deg"].unit == u.deg
        assert back["redshift"].meta["ucd"] == "src.redshift"
        assert back["measure_peak_flux_jy"].unit == u.Jy / u.beam
        assert np.allclose(back["redshift"], catalogue["redshift"])
    text = table_bytes(table, "csv").decode()
    body = [line for line in text.splitlines() if not line.startswith("#")]
    assert body[0].split(",")[:4] == ["cutout_id", "catalogue_id", "ra_deg", "dec_deg"]
    plain = Table.read(io.BytesIO(text.encode()), format="ascii.csv", comment="#")
    assert list(plain["source_id"]) == list(catalogue["source_id"])


def test_a_clashing_unit_is_refused(classified, mirabest_dir):
    engine, _, folder = classified
    other = user_catalogue(mirabest_dir, slice(1, 3))
    other["size"] = other["size"].to(u.arcmin)
    other.write(folder / "other.ecsv", overwrite=True)
    with pytest.raises(CatalogueError, match="'size' is in arcmin here, but this results database holds it in arcsec"):
        run_pipeline(expand_inputs(folder / "other.ecsv"), [load_stage("measure")], engine)


def test_a_catalogue_column_named_like_ours_is_prefixed(tmp_path, mirabest_dir, engine):
    catalogue = user_catalogue(mirabest_dir, slice(0, 2))
    catalogue["sha256"] = ["mine", "also mine"]
    catalogue.write(tmp_path / "clash.ecsv")
    run_pipeline(expand_inputs(tmp_path / "clash.ecsv"), [load_stage("measure")], engine)
    table = query_results(engine)
    assert list(table["catalogue_sha256"]) == ["mine", "also mine"]
    assert len(table["sha256"][0]) == 64
    # the catalogue said nothing of this column: no unit or UCD is invented for it
    spec = column_of(table, "catalogue_sha256")
    assert (spec.unit, spec.ucd, spec.description) == (None, None, "Column 'sha256' of the input catalogue")

"""The column registry: every column declared once, checked where declared, carried by every output."""

import numpy as np
import pytest
from astropy import units as u
from astropy.io.votable.ucd import check_ucd
from astropy.table import Table

from survey_classifier.columns import Column, annotate, column_of, columns_block, described_columns, select_columns
from survey_classifier.db.models import RESULT_TABLES, CutoutRow, ErrorRow
from survey_classifier.errors import SurveyClassifierError
from survey_classifier.stages.base import Stage
from survey_classifier.stages.registry import available_stages
from survey_classifier.testing import check_result_columns

#: Columns kept for bookkeeping that never reach an output.
_INTERNAL = {"id", "cutout_id", "stage", "updated_at", "extra", "embedding", "probabilities", "components",
             "catalogue", "warnings", "healpix"}


def test_every_output_column_of_the_database_is_described():
    for row_class in (CutoutRow, ErrorRow, *RESULT_TABLES.values()):
        described = described_columns(row_class)
        for column in row_class.__table__.columns:
            if column.name in _INTERNAL and column.name not in described:
                continue
            assert column.name in described, f"{row_class.__tablename__}.{column.name} has no description"
            spec = described[column.name]
            assert spec.description and (spec.ucd is None or check_ucd(spec.ucd, check_controlled_vocabulary=True))


def test_installed_stages_describe_their_fields_with_valid_units_and_ucds():
    for name, cls in available_stages().items():
        for column in cls.result_columns:
            assert column.checked() is column, name
            assert column.ucd and check_ucd(column.ucd, check_controlled_vocabulary=True), (name, column.name)


def test_a_bad_declaration_is_refused_where_it_is_made():
    with pytest.raises(ValueError, match="not a valid UCD1"):
        Column("x", "something", ucd="pos.nonsense").checked()
    with pytest.raises(ValueError, match="not an astropy unit"):
        Column("x", "something", unit="furlongs per fortnight").checked()
    with pytest.raises(TypeError, match="stage 'odd': column 'flux'"):
        type("Odd", (Stage,), {"name": "odd", "version": "1", "result_kind": "measurement",
                               "result_columns": (Column("flux", "flux", unit="Jy", ucd="not.a.ucd"),),
                               "process": lambda self, batch: []})


class _Undeclared(Stage):
    """A plugin stage that returns an extra field without describing it."""

    name = "undeclared"
    version = "1"
    result_kind = "measurement"

    def process(self, batch):
        return [{"peak_flux_jy": 1.0, "integrated_flux_jy": 1.0, "n_islands": 1, "las_arcsec": 1.0,
                 "centroid_offset_arcsec": 0.0, "snr": 12.5, "beams": [1, 2]} for _ in batch]


class _Declared(_Undeclared):
    name = "declared"
    result_columns = (Column("snr", "Peak signal-to-noise ratio", unit="", ucd="stat.snr"),)


def test_the_conformance_kit_wants_extra_fields_declared(mirabest_files):
    from survey_classifier.io.fits import read_cutout

    cutouts = [read_cutout(str(p)) for p in mirabest_files[:2]]
    with pytest.raises(AssertionError, match=r"returns \['snr'\] without describing them"):
        check_result_columns(_Undeclared(), cutouts)
    check_result_columns(_Declared(), cutouts)  # the list-valued field is not a column and needs nothing


def test_annotate_select_and_describe():
    table = Table({"cutout_id": np.arange(3), "ra_deg": [1.0, 2.0, 3.0], "cnn_label": ["a", "b", "c"],
                   "cnn_p_a": [0.1, 0.2, 0.3]})
    annotate(table["ra_deg"], Column("ra_deg", "Right ascension", unit="deg", ucd="pos.eq.ra;meta.main",
                                     format=".3f"))
    annotate(table["cnn_p_a"], Column("cnn_p_a", "Probability of class a", unit="", ucd="stat.probability"))
    assert table["ra_deg"].unit == u.deg and table["ra_deg"].meta["ucd"] == "pos.eq.ra;meta.main"
    assert column_of(table, "cnn_p_a").unit == ""  # dimensionless, said explicitly
    assert column_of(table, "cnn_label").unit is None  # text: no unit at all
    assert select_columns(table, "cnn_*,cutout_id").colnames == ["cnn_label", "cnn_p_a", "cutout_id"]
    block = columns_block(select_columns(table, ["ra_deg"]))
    assert block == [{"name": "ra_deg", "unit": "deg", "ucd": "pos.eq.ra;meta.main", "description": "Right ascension",
                      "format": ".3f"}]
    with pytest.raises(SurveyClassifierError, match="no column 'dec_deg' in these results; columns are: cutout_id"):
        select_columns(table, "cutout_id,dec_deg")

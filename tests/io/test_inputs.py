"""expand_inputs on folders, globs, files and catalogues in every supported format."""

from __future__ import annotations

import json
import os

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import MaskedColumn, Table

from survey_classifier.errors import CatalogueError, CutoutReadError, SurveyClassifierError
from survey_classifier.io import expand_inputs, read_cutout


@pytest.fixture(scope="module")
def labels(mirabest_dir):
    return Table.read(mirabest_dir / "labels.csv", format="ascii.csv")


@pytest.fixture
def catalogue_table(labels, mirabest_dir):
    """The first ten mirabest rows with absolute file names and a name column."""
    table = labels[:10].copy()
    table["file"] = [str(mirabest_dir / "fits" / name) for name in table["file"]]
    table["name"] = [f"MB{i:04d}" for i in range(len(table))]
    return table


def test_directory_lists_fits_files_sorted(mirabest_dir):
    sources = expand_inputs(mirabest_dir / "fits")
    assert len(sources) == 1027
    names = [os.path.basename(s.path) for s in sources]
    assert names == sorted(names)
    assert all(os.path.isabs(s.path) for s in sources)
    assert sources[0].ra_deg is None and sources[0].extra == {}


def test_directory_takes_every_fits_suffix_only(tmp_path):
    for name in ("b.fits", "a.fits.gz", "c.fits.fz", "d.fit", "notes.txt", "e.FITS"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.fits").mkdir()
    names = [os.path.basename(s.path) for s in expand_inputs(tmp_path)]
    assert names == ["a.fits.gz", "b.fits", "c.fits.fz", "d.fit", "e.FITS"]


def test_glob_and_single_file(mirabest_dir):
    pattern = str(mirabest_dir / "fits" / "2*.fits")
    sources = expand_inputs([pattern])
    assert len(sources) == 511  # FRII file names start with 2
    single = sources[0].path
    assert [s.path for s in expand_inputs(single)] == [single]


def test_glob_matching_nothing_is_an_error(tmp_path):
    with pytest.raises(SurveyClassifierError, match="matches no file"):
        expand_inputs(str(tmp_path / "*.fits"))


def test_missing_plain_path_is_passed_on(tmp_path):
    sources = expand_inputs(tmp_path / "absent.fits")
    assert sources[0].path == str(tmp_path / "absent.fits")
    with pytest.raises(CutoutReadError, match="file not found"):
        read_cutout(sources[0])


def test_mirabest_labels_csv_with_base_dir(mirabest_dir, labels):
    sources = expand_inputs(mirabest_dir / "labels.csv", base_dir=mirabest_dir / "fits")
    assert len(sources) == len(labels) == 1027
    first = sources[0]
    assert first.path == str(mirabest_dir / "fits" / labels["file"][0])
    assert os.path.exists(first.path)
    assert first.ra_deg == pytest.approx(float(labels["ra_deg"][0]))
    assert first.dec_deg == pytest.approx(float(labels["dec_deg"][0]))
    assert first.catalogue_id is None
    assert set(first.extra) == {
        "class_code", "fr_class", "confidence", "morphology", "redshift", "size_arcsec"
    }
    assert first.extra["fr_class"] == labels["fr_class"][0]
    json.dumps([s.extra for s in sources])  # JSON-safe
    assert all(type(s.extra["class_code"]) is int for s in sources)
    cutout = read_cutout(first)
    assert cutout.source.extra["size_arcsec"] == pytest.approx(float(labels["size_arcsec"][0]))


def test_relative_names_resolve_against_the_catalogue_directory(mirabest_dir, labels, tmp_path):
    fits_dir = tmp_path / "fits"
    fits_dir.mkdir()
    table = labels[:3]
    for name in table["file"]:
        (fits_dir / name).symlink_to(mirabest_dir / "fits" / name)
    table = table.copy()
    table["file"] = [f"fits/{name}" for name in table["file"]]
    table.write(tmp_path / "cat.csv", format="ascii.csv")
    sources = expand_inputs(tmp_path / "cat.csv")
    assert [s.path for s in sources] == [str(fits_dir / n) for n in labels["file"][:3]]
    assert all(os.path.exists(s.path) for s in sources)


@pytest.mark.parametrize(
    ("name", "table_format"),
    [("cat.ecsv", "ascii.ecsv"), ("cat.vot", "votable"), ("cat.xml", "votable"), ("cat.fits", "fits")],
)
def test_catalogue_formats(tmp_path, catalogue_table, name, table_format):
    catalogue_table["ra_deg"].unit = u.deg
    catalogue_table.write(tmp_path / name, format=table_format)
    sources = expand_inputs(tmp_path / name)
    assert [s.path for s in sources] == list(catalogue_table["file"])
    assert [s.catalogue_id for s in sources] == list(catalogue_table["name"])
    assert sources[3].ra_deg == pytest.approx(float(catalogue_table["ra_deg"][3]))
    assert sources[3].extra["redshift"] == pytest.approx(float(catalogue_table["redshift"][3]))
    assert sources[3].extra["fr_class"] == str(catalogue_table["fr_class"][3])
    json.dumps([s.extra for s in sources])


def test_fits_table_is_told_apart_from_a_fits_image(tmp_path, catalogue_table, mirabest_dir):
    catalogue_table.write(tmp_path / "table.fits", format="fits")
    image = mirabest_dir / "fits" / catalogue_table["file"][0]
    sources = expand_inputs([tmp_path / "table.fits", image])
    assert len(sources) == 11
    assert sources[-1].path == str(image) and sources[-1].extra == {}


def test_missing_file_in_a_row_still_yields_a_source(tmp_path, catalogue_table):
    catalogue_table["file"] = catalogue_table["file"].astype("U1024")  # room for any tmp_path
    catalogue_table["file"][2] = str(tmp_path / "gone.fits")
    catalogue_table.write(tmp_path / "cat.ecsv")
    sources = expand_inputs(tmp_path / "cat.ecsv")
    assert len(sources) == 10
    assert sources[2].path == str(tmp_path / "gone.fits")
    with pytest.raises(CutoutReadError, match="gone.fits: file not found"):
        read_cutout(sources[2])


def test_explicit_columns_and_units(tmp_path):
    table = Table()
    table["cutout_path"] = ["a.fits", "b.fits", ""]
    table["src"] = [1, 2, 3]
    table["RA_h"] = [1.0, 2.0, 3.0] * u.hourangle
    table["DE"] = [10.0, 20.0, 30.0] * u.deg
    table["flux"] = MaskedColumn([1.5, np.nan, 3.0], mask=[False, False, True])
    table.write(tmp_path / "cat.ecsv")
    sources = expand_inputs(
        tmp_path / "cat.ecsv",
        file_column="cutout_path",
        id_column="src",
        ra_column="RA_h",
        dec_column="DE",
    )
    assert [s.catalogue_id for s in sources] == ["1", "2", "3"]
    assert [s.ra_deg for s in sources] == pytest.approx([15.0, 30.0, 45.0])
    assert [s.dec_deg for s in sources] == pytest.approx([10.0, 20.0, 30.0])
    assert [s.extra["flux"] for s in sources] == [1.5, None, None]
    assert "no file named" in sources[2].path


def test_sexagesimal_positions(tmp_path):
    table = Table({"file": ["a.fits"], "RAJ2000": ["01:00:00.0"], "DEJ2000": ["-10:30:00"]})
    table.write(tmp_path / "cat.csv")
    (source,) = expand_inputs(tmp_path / "cat.csv")
    assert source.ra_deg == pytest.approx(15.0)
    assert source.dec_deg == pytest.approx(-10.5)


def test_missing_file_column_lists_the_columns(tmp_path):
    Table({"object": ["x"], "ra": [1.0], "dec": [2.0]}).write(tmp_path / "cat.csv")
    with pytest.raises(CatalogueError, match=r"no file column.*columns are \['object', 'ra', 'dec'\]"):
        expand_inputs(tmp_path / "cat.csv")


def test_named_column_absent(tmp_path):
    Table({"file": ["x.fits"]}).write(tmp_path / "cat.csv")
    with pytest.raises(CatalogueError, match="no id column 'objid'"):
        expand_inputs(tmp_path / "cat.csv", id_column="objid")


def test_unreadable_catalogue(tmp_path):
    (tmp_path / "broken.vot").write_text("<VOTABLE><RESOURCE><TABLE><oops")
    with pytest.raises(CatalogueError, match=r"broken.vot: cannot be read as votable"):
        expand_inputs(tmp_path / "broken.vot")


def test_fits_file_without_any_table_or_image_is_passed_to_the_reader(tmp_path):
    path = tmp_path / "empty_primary.fits"
    fits.PrimaryHDU().writeto(path)
    (source,) = expand_inputs(path)
    with pytest.raises(CutoutReadError, match="no HDU holds an image"):
        read_cutout(source)

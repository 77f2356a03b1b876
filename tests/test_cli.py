"""The survey-classifier command line, in-process, on real files and SQLite."""

import shutil
import subprocess
import sys

import numpy as np
import pytest
from astropy.table import Table
from click.testing import CliRunner
from sqlalchemy import func, select

from survey_classifier.cli import main
from survey_classifier.db import make_engine
from survey_classifier.db.models import CutoutRow, ErrorRow, MeasurementRow


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def counts(url):
    engine = make_engine(url)
    with engine.connect() as connection:
        result = tuple(
            connection.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (CutoutRow, MeasurementRow, ErrorRow)
        )
    engine.dispose()
    return result


@pytest.fixture
def folder(tmp_path, mirabest_files):
    folder = tmp_path / "cutouts"
    folder.mkdir()
    for path in mirabest_files[:10]:
        shutil.copy(path, folder)
    (folder / "broken.fits").write_bytes(mirabest_files[10].read_bytes()[:5000])
    return folder


def test_classify_summary_rerun_and_query(folder, sqlite_url, tmp_path):
    result = invoke("classify", folder, "--db", sqlite_url, "--quiet")
    assert result.exit_code == 0, result.output
    assert "11 cutouts, 10 processed, 1 failed" in result.output
    assert "broken.fits" in result.output and "[read]" in result.output
    assert counts(sqlite_url) == (11, 10, 1)
    again = invoke("classify", folder, "--db", sqlite_url, "--quiet")
    assert again.exit_code == 0
    assert counts(sqlite_url) == (11, 10, 1)

    listed = invoke("query", "--db", sqlite_url)
    assert listed.exit_code == 0 and "11 rows" in listed.output
    out = tmp_path / "measured.ecsv"
    exported = invoke("query", "--db", sqlite_url, "--stage", "measure", "-o", out)
    assert exported.exit_code == 0, exported.output
    assert len(Table.read(out)) == 10
    errors = invoke("query", "--db", sqlite_url, "--errors")
    assert "broken.fits" in errors.output and "1 rows" in errors.output


def test_classify_exits_nonzero_only_when_nothing_processed(tmp_path, sqlite_url):
    (tmp_path / "a.fits").write_bytes(b"")
    (tmp_path / "b.fits").write_text("SIMPLE = nonsense")
    result = invoke("classify", tmp_path / "a.fits", tmp_path / "b.fits", "--db", sqlite_url, "--quiet")
    assert result.exit_code == 1
    assert "0 processed, 2 failed" in result.output
    assert counts(sqlite_url) == (2, 0, 2)


def test_classify_catalogue_with_missing_file(tmp_path, sqlite_url, mirabest_dir):
    labels = Table.read(mirabest_dir / "labels.csv")[:5]
    labels["file"] = [str(mirabest_dir / "fits" / f) for f in labels["file"]]
    lost = ["/nowhere/lost.fits", 1.0, 2.0, 100, "FRI", "confident", "standard", 0.1, 30.0]
    labels.add_row(dict(zip(labels.colnames, lost)))
    catalogue = tmp_path / "cat.ecsv"
    labels.write(catalogue)
    result = invoke("classify", catalogue, "--db", sqlite_url, "--quiet")
    assert result.exit_code == 0, result.output
    assert "6 cutouts, 5 processed, 1 failed" in result.output
    table = Table.read(_export(sqlite_url, tmp_path), format="ascii.ecsv")
    assert "fr_class" in table.colnames  # catalogue columns are carried through
    present = [v for v in np.ma.asarray(table["fr_class"]).compressed() if v]
    assert sorted(set(present)) == sorted(set(labels["fr_class"]))
    assert len(present) == 6  # the missing file keeps its row


def _export(url, tmp_path):
    out = tmp_path / "all.ecsv"
    assert invoke("query", "--db", url, "-o", out).exit_code == 0
    return out


def test_unknown_stage_and_bad_param_are_clear(folder, sqlite_url):
    result = CliRunner().invoke(main, ["classify", str(folder), "--db", sqlite_url, "--stages", "nope"])
    assert result.exit_code != 0 and "no stage named 'nope'" in result.output
    result = CliRunner().invoke(main, ["classify", str(folder), "--db", sqlite_url, "--param", "measure=3"])
    assert result.exit_code != 0 and "STAGE.NAME=VALUE" in result.output


def test_plugins_list_and_db_upgrade(sqlite_url):
    listed = invoke("plugins", "list")
    assert listed.exit_code == 0
    assert any(line.startswith("measure ") and "measurement" in line for line in listed.output.splitlines())
    upgraded = invoke("db", "upgrade", "--db", sqlite_url)
    assert upgraded.exit_code == 0 and counts(sqlite_url) == (0, 0, 0)


def test_query_on_an_empty_database_says_what_to_do(tmp_path):
    result = CliRunner().invoke(main, ["query", "--db", f"sqlite:///{tmp_path / 'empty.db'}"])
    assert result.exit_code != 0 and "db upgrade" in result.output


@pytest.mark.slow
def test_demo_runs_end_to_end_from_the_installed_script(tmp_path):
    script = shutil.which("survey-classifier", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert script, "the survey-classifier console script is not installed"
    done = subprocess.run(
        [script, "demo", "--directory", str(tmp_path / "demo")], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert "processed, 0 failed" in done.stdout
    results = Table.read(tmp_path / "demo" / "results.ecsv")
    assert len(results) == 24 and "measure_peak_flux_jy" in results.colnames


def test_query_columns_positions_and_formats(folder, sqlite_url, tmp_path):
    assert invoke("classify", folder, "--db", sqlite_url, "--stages", "measure", "--quiet").exit_code == 0
    table = Table.read(_export_as(sqlite_url, tmp_path / "all.vot"))
    centre = table[3]
    from astropy.coordinates import SkyCoord

    coord = SkyCoord(centre["ra_deg"], centre["dec_deg"], unit="deg")
    sexagesimal = coord.to_string("hmsdms", sep=":", precision=2)
    found = invoke("query", "--db", sqlite_url, "--position", sexagesimal, "--radius", "1arcsec",
                   "--columns", "cutout_id,separation_arcsec,measure_peak_flux_jy")
    assert found.exit_code == 0, found.output
    lines = found.output.splitlines()
    assert lines[0].split() == ["cutout_id", "separation_arcsec", "measure_peak_flux_jy"]
    assert "arcsec" in lines[1] and "Jy / beam" in lines[1]  # the units row
    assert f" {centre['cutout_id']} " in f" {lines[3]} " and lines[-1] == "1 rows"
    split = invoke("query", "--db", sqlite_url, "--ra", coord.ra.to_string(unit="hourangle", sep=":"),
                   "--dec", coord.dec.to_string(sep=":", alwayssign=True), "--radius", "1arcsec")
    assert split.exit_code == 0 and "1 rows" in split.output and "more columns" in split.output
    printed = invoke("query", "--db", sqlite_url)  # floats formatted per column, the main columns first
    header = printed.output.splitlines()[0].split()
    assert header[:4] == ["cutout_id", "catalogue_id", "ra_deg", "dec_deg"]
    assert all(len(value.split(".")[1]) == 6 for value in printed.output.splitlines()[3].split()[2:4])
    described = invoke("query", "--db", sqlite_url, "--describe", "--columns", "ra_deg,measure_n_islands")
    assert "pos.eq.ra;meta.main" in described.output and "(dimensionless)" in described.output
    bad = invoke("query", "--db", sqlite_url, "--ra", "10:00:60", "--dec", "0", "--radius", "1")
    assert bad.exit_code == 1 and "--ra: '10:00:60' is not an angle" in bad.output
    unknown = invoke("query", "--db", sqlite_url, "--columns", "nosuch")
    assert unknown.exit_code == 1 and "no column 'nosuch'" in unknown.output
    for suffix, reader in ((".fits", "fits"), (".csv", "ascii.ecsv"), (".ecsv", "ascii.ecsv")):
        back = Table.read(_export_as(sqlite_url, tmp_path / f"out{suffix}"), format=reader)
        assert back["ra_deg"].unit == "deg" and len(back) == 10


def _export_as(url, path):
    result = invoke("query", "--db", url, "--stage", "measure", "-o", path)
    assert result.exit_code == 0 and f"({path.suffix.lstrip('.').replace('vot', 'votable')})" in result.output
    return path

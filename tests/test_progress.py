"""Long runs say where they are: failures by stage in the bar, by reason at the end, and how to list them."""

import re
import shutil

import pytest
from click.testing import CliRunner
from helpers.plugins import install_example_plugin

from survey_classifier.cli import main
from survey_classifier.cli.progress import RunProgress, errors_command, failure_postfix
from survey_classifier.db import make_engine
from survey_classifier.io.inputs import expand_inputs
from survey_classifier.pipeline import Pipeline
from survey_classifier.query import failed_by_stage
from survey_classifier.stages.registry import load_stage


@pytest.fixture
def folder(tmp_path, mirabest_files):
    """Six real cutouts, one truncated file and one image without a WCS (compactness fails on it)."""
    folder = tmp_path / "cutouts"
    folder.mkdir()
    for path in mirabest_files[:6]:
        shutil.copy(path, folder)
    (folder / "broken.fits").write_bytes(mirabest_files[6].read_bytes()[:5000])
    from astropy.io import fits

    with fits.open(mirabest_files[7]) as hdus:
        fits.PrimaryHDU(hdus[0].data).writeto(folder / "no_wcs.fits")
    return folder


def test_bar_postfix_counts_failed_cutouts_by_stage(folder):
    sources = expand_inputs([str(folder)])
    batch = Pipeline([load_stage("measure")]).process_batch(sources)
    with RunProgress(len(sources), stages=["measure"]) as bar:
        bar.batch_done(batch)
        assert bar.bar.n == 8
        assert dict(bar.failed) == {"read": 1, "measure": 0}
        assert failure_postfix(bar.failed) == "failed: read 1"
    assert failure_postfix({"read": 0, "cnn": 0}) == "no failures"
    assert failure_postfix({"read": 2, "cnn": 0, "som": 3}) == "failed: read 2, som 3"


def test_classify_shows_failures_in_the_bar_and_sums_them_up(folder, sqlite_url, tmp_path, monkeypatch):
    install_example_plugin(tmp_path / "site", monkeypatch)
    result = CliRunner().invoke(main, ["classify", str(folder), "--stages", "compactness", "--db", sqlite_url],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "failed: read 1, compactness 1" in result.stderr  # the bar's postfix
    out = result.stdout
    assert "8 cutouts, 6 processed, 2 failed" in out
    assert "failures by stage: read 1, compactness 1" in out
    assert re.search(r"failures by reason:\n  1 x \[read\] .*\(e\.g\. broken\.fits\)", out)
    assert "  1 x [compactness] no integrated flux from the measure stage (no pixel scale: the cutout has no WCS) " \
           "(e.g. no_wcs.fits)" in out
    command = f"survey-classifier query --errors --run 1 --db {sqlite_url}"
    assert f"list them all: {command}" in out
    listed = CliRunner().invoke(main, command.split()[1:], catch_exceptions=False)
    assert "broken.fits" in listed.output and "no_wcs.fits" in listed.output and "2 rows" in listed.output

    engine = make_engine(sqlite_url)
    assert failed_by_stage(engine, 1) == {"read": 1, "compactness": 1}
    engine.dispose()
    assert errors_command(3, None) == "survey-classifier query --errors --run 3"


def test_a_clean_run_prints_no_failure_lines(folder, sqlite_url):
    (folder / "broken.fits").unlink()
    result = CliRunner().invoke(main, ["classify", str(folder), "--stages", "measure", "--db", sqlite_url],
                                catch_exceptions=False)
    assert "no failures" in result.stderr
    assert "failures by" not in result.stdout and "list them all" not in result.stdout


def test_failures_that_differ_only_in_their_figures_are_summed_up_as_one_reason(mirabest_dir, sqlite_url):
    """Three MiraBest sources too faint for the default map, each with its own peak and noise: one line."""
    faint = ["110_177.417+038.195_0.1254_0066.80.fits", "110_181.597+042.580_0.0833_0110.47.fits",
             "210_176.904+020.862_0.1313_0087.61.fits"]
    bright = "110_131.314+059.480_0.2716_0059.82.fits"
    files = [str(mirabest_dir / "fits" / name) for name in [*faint, bright]]
    result = CliRunner().invoke(main, ["classify", *files, "--stages", "som", "--db", sqlite_url, "--quiet"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "4 cutouts, 1 processed, 3 failed" in out
    lines = out.split("failures by reason:\n")[1].splitlines()
    assert lines[0] == ("  3 x [som] no source to place: no island of emission reaches the … sigma seed level of the "
                        "preparation (brightest pixel … sigma above the background, noise … mJy/beam), so the "
                        f"prepared image is empty (e.g. {', '.join(faint)})")
    assert lines[1].startswith("list them all")
    listed = CliRunner().invoke(main, ["query", "--errors", "--run", "1", "--db", sqlite_url], catch_exceptions=False)
    for peak in ("4.4 sigma", "4.3 sigma", "4.8 sigma"):  # each error keeps its own figures
        assert f"brightest pixel {peak}" in listed.output

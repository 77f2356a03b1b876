"""What a new user reads: the anomaly gallery, `models show`, `runs list`."""

import html
import re

import matplotlib.pyplot as plt
import pytest
from astropy.table import Table
from click.testing import CliRunner

from survey_classifier.anomaly.report import gallery_figure, make_gallery
from survey_classifier.cli import main
from survey_classifier.db import make_engine
from survey_classifier.query import top_anomalies

pytestmark = pytest.mark.slow


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def classified(tmp_path_factory, mirabest_dir):
    """Seven MiraBest sources through every default stage, from a catalogue naming them."""
    folder = tmp_path_factory.mktemp("outputs")
    labels = Table.read(mirabest_dir / "labels.csv", format="ascii.csv")[::150]
    labels["name"] = [f"MB{i:04d}" for i in range(len(labels))]
    catalogue = folder / "catalogue.csv"
    labels["file", "name", "ra_deg", "dec_deg", "fr_class"].write(catalogue, format="ascii.csv")
    url = f"sqlite:///{folder / 'r.db'}"
    invoke("classify", catalogue, "--base-dir", mirabest_dir / "fits", "--id-column", "name", "--db", url, "--quiet")
    return url, labels, folder


def test_gallery_title_clear_of_the_captions_and_page_names_the_sources(classified):
    url, labels, folder = classified
    engine = make_engine(url)
    table = top_anomalies(engine, 7)
    engine.dispose()
    for n in (3, 5, 7):  # one row (the title above the middle tile), and two
        figure, images = gallery_figure(table[:n], "Top anomalies")
        figure.canvas.draw()
        renderer = figure.canvas.get_renderer()
        title = figure._suptitle.get_window_extent(renderer)
        for axis in figure.axes:
            caption = axis.title.get_window_extent(renderer)
            assert not title.overlaps(caption), f"the title overlaps the caption {axis.get_title()!r} ({n} tiles)"
        assert len(images) == n and all(image is not None for image in images)
        plt.close(figure)

    png, page = make_gallery(table, folder / "gallery")
    text = page.read_text()
    headings = re.findall(r"<th>(.*?)</th>", text)
    assert headings[:7] == ["rank", "cutout", "name", "RA (deg)", "Dec (deg)", "score", "percentile"]
    assert len(headings) == len(set(headings)) and "anomaly_rank" not in text and "rank" not in headings[1:]
    rows = re.findall(r"<tr>(.*?)</tr>", text)[1:]
    assert len(rows) == 7
    by_name = {f"MB{i:04d}": row for i, row in enumerate(labels)}
    for rank, row in enumerate(rows, start=1):
        cells = re.findall(r"<td>(.*?)</td>", row)
        assert cells[0] == str(rank)
        name = html.unescape(re.sub(r"<[^>]+>", "", cells[2]))
        source = by_name[name]  # the catalogue's name, not the file's
        assert source["file"] in html.unescape(cells[2])  # the file is still a link away
        assert float(cells[3]) == pytest.approx(source["ra_deg"], abs=1e-3)
        assert float(cells[4]) == pytest.approx(source["dec_deg"], abs=1e-3)
        assert (folder / "gallery" / "cutouts" / f"{rank:04d}.png").exists()


def test_models_show_prints_the_card_as_markdown_and_the_metrics_as_a_table(classified):
    url, _, _ = classified
    out = invoke("models", "show", "fr-cnn", "1", "--db", url)
    lines = out.splitlines()
    assert lines[0] == "fr-cnn:1 (stage cnn, default)"
    assert re.search(r"^  test_accuracy +0\.893$", out, re.MULTILINE)
    assert re.search(r"^  test_sources +131$", out, re.MULTILINE)
    from survey_classifier.stages.cnn import FR_CNN

    card = FR_CNN.card_text()
    assert card.strip() in out and "\\n" not in out  # the Markdown itself, not an escaped string
    assert out.index("metrics:") < out.index("model card:") < out.index(card.splitlines()[0])
    assert invoke("models", "show", "fr-cnn", "1", "--db", url, "--json").lstrip().startswith("{")


def test_runs_list(classified, mirabest_dir):
    url, _, folder = classified
    invoke("classify", folder / "catalogue.csv", "--stages", "measure", "--base-dir", mirabest_dir / "fits",
           "--db", url, "--quiet")
    out = invoke("runs", "list", "--db", url)
    header = out.splitlines()[0].split()
    assert header[:8] == ["run", "started_utc", "took_s", "status", "executor", "cutouts", "processed", "failed"]
    first = next(line for line in out.splitlines() if line.lstrip().startswith("1 "))
    assert "finished" in first and "in-process" in first and "cnn 1 (fr-cnn:1)" in first and " 7 " in first
    second = next(line for line in out.splitlines() if line.lstrip().startswith("2 "))
    assert out.index(second) < out.index(first)  # newest first
    assert "measure 2" in second
    assert "2 runs" in out and f"survey-classifier status 2 --db {url}" in out
    assert "1 runs (the newest; --limit for more)" in invoke("runs", "list", "--db", url, "--limit", "1")

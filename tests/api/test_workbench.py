"""The astronomer's workbench in a real browser: filter, open a source, label it, see the anomalies re-ranked and
the labelled neuron, over ``survey-classifier serve`` (uvicorn in its own process) on a database of real MiraBest
cutouts classified by the default stages; then the service restarts and the labels are still there.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from helpers.browser import CHROMIUM_ARGS, chromium, keep_screenshot
from sqlalchemy import select

from survey_classifier.db import make_engine
from survey_classifier.db.models import ClassificationRow, SourceLabelRow
from survey_classifier.query import query_results, top_anomalies

TOKEN = "workbench-t0ken-for-the-tests"


class Service:
    """``survey-classifier serve`` in a process of its own, with the write token in its environment."""

    def __init__(self, url: str, log):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url, self.log, self.process = url, log, None
        self.base = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "SURVEY_CLASSIFIER_API_TOKEN": TOKEN}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "survey_classifier.cli", "serve", "--db", self.url, "--port", str(self.port)],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.base + "/stages", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"survey-classifier serve did not start (exit {self.process.poll()})")
            time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


@pytest.fixture(scope="module")
def database(classified_db, tmp_path_factory):
    """A copy of the classified database for this module to label."""
    import shutil

    folder = tmp_path_factory.mktemp("workbench-labels")
    shutil.copy(classified_db["path"], folder / "workbench.db")
    url = f"sqlite:///{folder / 'workbench.db'}"
    engine = make_engine(url)
    yield {"url": url, "engine": engine, "folder": folder, "n": classified_db["n"]}
    engine.dispose()


@pytest.fixture(scope="module")
def service(database):
    with open(database["folder"] / "serve.log", "wb") as log:
        service = Service(database["url"], log)
        service.start()
        yield service
        if service.process.poll() is None:
            service.stop()


@pytest.fixture(scope="module")
def browser(service):
    executable = chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, service):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    outside = []
    page.on("request", lambda request: None if request.url.startswith(service.base) else outside.append(request.url))
    yield page
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"
    assert outside == [], f"the page fetched from elsewhere: {outside}"


def _shot(page, tmp_path, name: str) -> None:
    page.wait_for_function("[...document.querySelectorAll('.view:not([hidden]) img:not([loading=lazy])')]"
                           ".every(i => i.complete) && !document.body.innerText.includes('loading…')")
    shot = tmp_path / f"workbench-{name}.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    keep_screenshot(shot)


def _ids(page, selector: str) -> list[int]:
    return page.eval_on_selector_all(selector, "nodes => nodes.map(n => Number(n.dataset.cutout))")


def _loaded(page, selector: str) -> bool:
    return page.eval_on_selector_all(selector, "imgs => imgs.length > 0 && imgs.every(i => i.complete && "
                                               "i.naturalWidth > 0)")


def _no_paths(page, mirabest_dir) -> None:
    text = page.inner_text("body")
    assert str(mirabest_dir) not in text and ".fits" not in text


def test_filter_open_label_rerank_and_label_a_neuron(page, service, database, mirabest_dir, tmp_path):
    engine = database["engine"]
    # ---- results: filter on class and probability, sorted by anomaly score, largest first
    page.goto(service.base + "/")
    page.wait_for_selector("#results-table tbody tr")
    assert len(_ids(page, "#results-table tbody tr")) == database["n"]
    page.select_option("#f-label", "FRII")
    page.fill("#f-min-p", "0.6")
    page.click("#apply")
    page.wait_for_function("location.hash.includes('label=FRII')")
    expected = query_results(engine, label="FRII", min_probability=0.6)
    page.wait_for_function(f"document.querySelectorAll('#results-table tbody tr').length === {len(expected)}")
    page.click('#results-table th[data-column="anomaly_score"] button')
    page.wait_for_function("location.hash.includes('sort=anomaly_score')")
    page.wait_for_selector('#results-table th[data-column="anomaly_score"] >> text=▲')
    page.click('#results-table th[data-column="anomaly_score"] button')
    page.wait_for_function("location.hash.includes('sort=-anomaly_score')")
    page.wait_for_selector('#results-table th[data-column="anomaly_score"] >> text=▼')
    order = np.argsort(-np.asarray(expected["anomaly_score"]), kind="stable")
    by_score = [int(i) for i in expected[order]["cutout_id"]]
    assert _ids(page, "#results-table tbody tr") == by_score
    # the column picker drops a column; the view, columns included, is in the address and can be shared
    page.click("#column-picker summary")
    page.uncheck('#column-list input[value="dec_deg"]')
    page.wait_for_function("location.hash.includes('cols=')")
    page.wait_for_function("!document.querySelector('#results-table th[data-column=\"dec_deg\"]')")
    shared = page.context.new_page()
    shared.goto(page.url)
    shared.wait_for_selector("#results-table tbody tr")
    assert _ids(shared, "#results-table tbody tr") == by_score
    assert shared.locator('#results-table th[data-column="dec_deg"]').count() == 0
    shared.close()
    # the export is exactly the filtered set, in the order and with the columns shown
    href = page.get_attribute('#exports a[data-format="votable"]', "href")
    exported = Table.read(io.BytesIO(page.request.get(service.base + href).body()), format="votable")
    assert exported["cutout_id"].tolist() == by_score
    assert "dec_deg" not in exported.colnames and "ra_deg" in exported.colnames
    assert str(exported["ra_deg"].unit) == "deg"
    _shot(page, tmp_path, "1-results-filtered")
    _no_paths(page, mirabest_dir)

    # ---- paging: 5 rows a page, the second page follows the first
    page.select_option("#page-size", "25")
    page.wait_for_function("location.hash.includes('limit=25')")
    page.goto(page.url.replace("limit=25", "limit=5"))
    page.wait_for_function("document.querySelectorAll('#results-table tbody tr').length === 5")
    assert _ids(page, "#results-table tbody tr") == by_score[:5]
    page.click("#next-page")
    page.wait_for_function("location.hash.includes('offset=5')")
    page.wait_for_function(f"document.querySelector('#results-table tbody tr').dataset.cutout == {by_score[5]}")
    assert _ids(page, "#results-table tbody tr") == by_score[5:10]

    # ---- a cone search given in sexagesimal, with a radius in arcmin
    everything = query_results(engine)
    coords = SkyCoord(everything["ra_deg"], everything["dec_deg"], unit="deg")
    centre = coords[4]
    near = sorted(everything["cutout_id"][centre.separation(coords).deg <= 8.0].tolist())
    page.click("#clear")
    page.wait_for_function(f"document.querySelectorAll('#results-table tbody tr').length === {database['n']}")
    page.fill("#f-ra", centre.ra.to_string(unit="hourangle", sep="hms", precision=2))
    page.fill("#f-dec", centre.dec.to_string(sep="dms", precision=1, alwayssign=True))
    page.fill("#f-radius", "480arcmin")
    page.click("#apply")
    page.wait_for_function("location.hash.includes('480arcmin')")
    page.wait_for_function(f"document.querySelectorAll('#results-table tbody tr').length === {len(near)}")
    assert sorted(_ids(page, "#results-table tbody tr")) == near

    # ---- open the most anomalous FRII
    chosen = by_score[0]
    row = everything[everything["cutout_id"] == chosen][0]
    page.goto(service.base + "/#/results?label=FRII&min_probability=0.6&sort=-anomaly_score")
    page.wait_for_function(f"document.querySelector('#results-table tbody tr').dataset.cutout == {chosen}")
    page.click(f'#results-table tbody tr[data-cutout="{chosen}"] td:nth-child(2) a')
    page.wait_for_function("location.hash.startsWith('#/source/')")
    page.wait_for_selector(f"#source-title >> text={row['catalogue_id']}")
    position = SkyCoord(row["ra_deg"], row["dec_deg"], unit="deg")
    hms = position.ra.hms
    assert f"{int(hms.h):02d}h{int(hms.m):02d}m" in page.inner_text("#source-position")
    # the FITS download is the file itself
    fits_bytes = page.request.get(service.base + page.get_attribute("#fits-link", "href")).body()
    with fits.open(io.BytesIO(fits_bytes)) as hdus:
        assert hdus[0].data.shape == (150, 150)
    # the stretch control redraws the cutout
    page.select_option("#img-scale", "linear")
    page.wait_for_function("document.getElementById('source-image').src.includes('scale=linear')")
    page.wait_for_function("document.getElementById('source-image').complete")
    assert _loaded(page, "#source-image")
    # every stage with its version and model; the anomaly components with their percentiles
    stages = page.inner_text("#source-stages")
    assert f"cnn · version {row['cnn_stage_version']} · model {row['cnn_model_ref']}" in stages
    assert f"som · version {row['som_stage_version']} · model {row['som_model_ref']}" in stages
    for part in ("som_distance", "cnn_entropy", "embedding_knn", "embedding_iforest", "asymmetry"):
        cells = page.eval_on_selector_all(f'#source-anomaly tr[data-component="{part}"] td',
                                          "cells => cells.map(c => c.textContent)")
        assert cells[2] == f"{100 * row[f'anomaly_{part}_pct']:.1f} %"
    # the source turned into its neuron's frame beside the neuron
    page.wait_for_function("document.getElementById('source-in-frame').complete && "
                           "document.getElementById('neuron-prototype').complete")
    assert _loaded(page, "#source-in-frame") and _loaded(page, "#neuron-prototype")
    node = (int(row["som_node_x"]), int(row["som_node_y"]))
    assert f"neuron ({node[0]}, {node[1]})" in page.inner_text("#source-som")
    # its nearest neighbours in the CNN's embedding space, nearest first
    page.wait_for_function("document.querySelectorAll('#neighbours .card').length === 8")
    assert _ids(page, "#neighbours .card") == _nearest(engine, chosen, 8)
    _shot(page, tmp_path, "2-source")
    _no_paths(page, mirabest_dir)

    # ---- labelling: refused with a wrong token, saved with the right one; the anomalies re-rank
    assert page.is_disabled("#label-save")
    page.fill("#author", "ann")
    page.fill("#token", "not-the-token-at-all")
    page.click("#token-use")
    page.fill("#label-class", "hybrid")
    page.check("#label-interesting")
    page.fill("#label-note", "FR I jet to the west, FR II lobe east")
    page.click("#label-save")
    page.wait_for_selector("#label-status.error")
    assert "Bearer TOKEN" in page.inner_text("#label-status")
    with engine.connect() as connection:
        assert connection.execute(select(SourceLabelRow.id)).first() is None
    page.fill("#token", TOKEN)
    page.click("#token-use")
    assert "labelling as ann" in page.inner_text("#mode")
    unsupervised = top_anomalies(engine, database["n"])["cutout_id"].tolist()
    page.click("#label-save")
    page.wait_for_selector("#label-status >> text=re-ranked with 1 label")
    with engine.connect() as connection:
        stored = connection.execute(select(SourceLabelRow.__table__)).all()
    assert [(r.cutout_id, r.label, r.interesting, r.author) for r in stored] == [(chosen, "hybrid", True, "ann")]
    assert "current: hybrid, interesting" in page.inner_text("#label-history")
    page.click("#see-reranked")
    page.wait_for_function("location.hash.includes('stage=reranked')")
    reranked = top_anomalies(engine, 48, stage="reranked")["cutout_id"].tolist()
    assert reranked != unsupervised[:48]
    page.wait_for_function(f"document.querySelectorAll('#anomalies .card').length === {len(reranked)}")
    assert _ids(page, "#anomalies .card") == reranked
    assert "last re-ranking: 1 label," in page.inner_text("#anomaly-info")
    assert page.get_attribute(f'#anomalies .card[data-cutout="{chosen}"]', "class") == "card interesting"
    page.check("#anomaly-unlabelled")
    page.wait_for_function("location.hash.includes('unlabelled=true')")
    page.wait_for_function(f"!document.querySelector('#anomalies .card[data-cutout=\"{chosen}\"]')")
    _shot(page, tmp_path, "3-anomalies-reranked")

    # ---- label the source's neuron, on the map
    page.goto(service.base + f"/#/source/{chosen}")
    page.click("#source-som a[href^='#/som']")
    page.wait_for_function(f"location.hash.includes('x={node[0]}&y={node[1]}')")
    members = query_results(engine, som_node=node, sort="som_distance")["cutout_id"].tolist()
    page.wait_for_function(f"document.querySelectorAll('#node-cutouts .card').length === {len(members)}")
    assert _ids(page, "#node-cutouts .card") == members
    page.wait_for_function("[...document.querySelectorAll('#node-cutouts img')].every(i => i.complete)")
    assert _loaded(page, "#node-cutouts img")
    assert page.get_attribute("#node-cutouts img", "src").startswith(f"/cutouts/{members[0]}/som.png")
    page.fill("#neuron-class", "FRII")
    page.click("#neuron-save")
    page.wait_for_selector(f"#neuron-status >> text=neuron ({node[0]}, {node[1]}) labelled FRII")
    cell = f'#som-map .som-cell[data-x="{node[0]}"][data-y="{node[1]}"]'
    assert page.inner_text(f"{cell} .neuron-label") == "FRII"
    # the whole 10 x 10 map is on the screen at 1400 px, each neuron at its full size
    boxes = page.eval_on_selector_all("#som-map .som-cell", "cells => cells.map(c => c.getBoundingClientRect())"
                                      ".map(r => [r.left, r.right, r.width])")
    assert len(boxes) == 100 and all(width >= 60 and right <= 1400 for _, right, width in boxes)
    page.wait_for_function("[...document.querySelectorAll('#som-map img')].every(i => i.complete)")
    assert _loaded(page, "#som-map img")
    _shot(page, tmp_path, "4-som-neuron-labelled")
    _no_paths(page, mirabest_dir)

    # ---- the service restarts: the labels were in the database
    service.stop()
    service.start()
    page.goto(service.base + f"/#/source/{chosen}")
    page.wait_for_selector("#label-history >> text=current: hybrid, interesting")
    page.wait_for_selector("#source-som >> text=neuron label")
    assert "FRII" in page.inner_text("#source-som")
    page.goto(service.base + f"/#/som?x={node[0]}&y={node[1]}")
    page.wait_for_selector(f"{cell} .neuron-label")
    assert page.inner_text(f"{cell} .neuron-label") == "FRII"
    page.goto(service.base + "/#/results?interesting=true")
    page.wait_for_function("document.querySelectorAll('#results-table tbody tr').length === 1")
    assert _ids(page, "#results-table tbody tr") == [chosen]


def _nearest(engine, cutout_id: int, k: int) -> list[int]:
    """The ``k`` nearest sources by cosine distance of the stored CNN embeddings, computed here."""
    t = ClassificationRow.__table__
    with engine.connect() as connection:
        rows = connection.execute(select(t.c.cutout_id, t.c.embedding).where(t.c.stage == "cnn")).all()
    vectors = {r.cutout_id: np.frombuffer(r.embedding, dtype="<f4").astype(float) for r in rows}
    own = vectors.pop(cutout_id)
    distance = {i: 1 - v @ own / (np.linalg.norm(v) * np.linalg.norm(own)) for i, v in vectors.items()}
    return sorted(distance, key=lambda i: (distance[i], i))[:k]


def test_pictures_turned_away_busy_are_asked_for_again(page, service):
    """The server answers 503 when its render slots stay taken; the page asks for such a picture again."""
    refused = []

    def busy_once(route):
        if "try=" not in route.request.url:
            refused.append(route.request.url)
            route.fulfill(status=503, headers={"Retry-After": "1"}, body="busy")
        else:
            route.continue_()

    page.route("**/cutouts/*/image.png*", busy_once)
    page.goto(service.base + "/")
    page.wait_for_selector("#results-table tbody tr")
    page.wait_for_function("[...document.querySelectorAll('#results-table img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)", timeout=30_000)
    shown = page.eval_on_selector_all("#results-table img", "imgs => imgs.map(i => i.dataset.tries)")
    assert refused and len(shown) >= len(refused) > 0
    assert all(tries == "1" for tries in shown), shown

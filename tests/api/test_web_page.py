"""The results page in headless Chromium (Debian's package, driven by Playwright), over a live server."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from astropy.coordinates import SkyCoord
from helpers.browser import CHROMIUM_ARGS, chromium, keep_screenshot

from survey_classifier.formats import EXPORT_FORMATS
from survey_classifier.query import query_results


@pytest.fixture(scope="module")
def server(app):
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="none", lifespan="off")
    uvicorn_server = uvicorn.Server(config)
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uvicorn_server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the API server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    uvicorn_server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def page(server):
    executable = chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1280, "height": 1400})
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server + "/")
        yield page
        browser.close()
        assert errors == [], f"JavaScript errors on the page: {errors}"


def _images_loaded(page, selector) -> bool:
    loaded = "imgs => imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0)"
    return page.eval_on_selector_all(selector, loaded)


def test_page_shows_labels_som_and_anomalies(page, server, service_db):
    page.goto(server + "/#/results")
    page.wait_for_selector("#labels .bar-row")
    labels = page.eval_on_selector_all("#labels .bar-row", "rows => rows.map(r => r.dataset.label)")
    assert set(labels) <= {"bright", "faint"} and labels
    page.goto(server + "/#/som")
    page.wait_for_selector("#som-map .som-cell img")
    placements = service_db["placements"]
    width = 1 + max(p["node_x"] for p in placements.values())
    height = 1 + max(p["node_y"] for p in placements.values())
    assert page.locator("#som-map .som-cell").count() == width * height  # a map outside the registry: its hits
    disabled = page.eval_on_selector_all("#som-overlay option", "os => os.filter(o => o.disabled).map(o => o.value)")
    assert disabled == ["class", "umatrix"]  # nothing of the map itself to lay over it
    page.goto(server + "/#/anomalies?top=24")
    page.wait_for_function("document.querySelectorAll('#anomalies .card').length === 24")
    page.wait_for_function("[...document.querySelectorAll('#anomalies img')].every(i => i.complete)")
    assert _images_loaded(page, "#anomalies img")


def test_clicking_a_som_node_lists_its_cutouts(page, server, service_db):
    placements = service_db["placements"]
    node = max({(p["node_x"], p["node_y"]) for p in placements.values()},
               key=lambda n: sum((p["node_x"], p["node_y"]) == n for p in placements.values()))
    members = sorted((i for i, p in placements.items() if (p["node_x"], p["node_y"]) == node),
                     key=lambda i: (placements[i]["distance"], i))
    page.goto(server + "/#/som")
    page.click(f'#som-map .som-cell[data-x="{node[0]}"][data-y="{node[1]}"]')
    page.wait_for_function(f"document.querySelectorAll('#node-cutouts .card').length === {len(members)}")
    shown = page.eval_on_selector_all("#node-cutouts .card", "cards => cards.map(c => Number(c.dataset.cutout))")
    assert shown == members  # closest to the neuron first
    assert f"neuron ({node[0]}, {node[1]}): {len(members)} sources" in page.inner_text("#node-title")


def _cone(page, ra, dec, radius):
    page.fill("#f-ra", ra)
    page.fill("#f-dec", dec)
    page.fill("#f-radius", radius)
    page.click("#apply")


def test_cone_search_form(page, server, service_db, tmp_path):
    table = query_results(service_db["engine"])
    coords = SkyCoord(table["ra_deg"], table["dec_deg"])
    centre = coords[7]
    expected = set(table["cutout_id"][centre.separation(coords).deg <= 8.0].tolist())
    page.goto(server + "/#/results")
    page.wait_for_selector("#results-table tbody tr")
    _cone(page, f"{centre.ra.deg:.5f}", f"{centre.dec.deg:.5f}", "8")
    page.wait_for_function("location.hash.includes('radius=8')")
    page.wait_for_function(f"document.querySelectorAll('#results-table tbody tr').length === {len(expected)}")
    shown = page.eval_on_selector_all("#results-table tbody tr", "rows => rows.map(r => Number(r.dataset.cutout))")
    assert set(shown) == expected
    page.wait_for_function("[...document.querySelectorAll('#results-table img')].every(i => i.complete)")
    assert _images_loaded(page, "#results-table img")
    assert page.locator("#exports a").count() == len(EXPORT_FORMATS)
    shot = tmp_path / "results-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    keep_screenshot(shot)
    # sexagesimal positions and a radius with a unit find the same cutouts
    _cone(page, centre.ra.to_string(unit="hourangle", sep=":", precision=4),
          centre.dec.to_string(sep=":", precision=3, alwayssign=True), "480arcmin")
    page.wait_for_function("location.hash.includes('480arcmin')")
    page.wait_for_function(f"document.querySelectorAll('#results-table tbody tr').length === {len(expected)}")
    shown = page.eval_on_selector_all("#results-table tbody tr", "rows => rows.map(r => Number(r.dataset.cutout))")
    assert set(shown) == expected
    # a malformed coordinate is refused with the API's message, shown in the page
    _cone(page, "12h70m", "+10:00:00", "1deg")
    page.wait_for_selector("#results-status.error")
    assert "ra" in page.inner_text("#results-status")
    assert page.locator("#results-table tbody tr").count() == 0


def test_api_docs_render_without_a_cdn(page, server, tmp_path):
    """/docs draws every operation from assets served by the service itself; nothing else is fetched."""
    docs = page.context.new_page()
    fetched = []
    docs.on("request", lambda request: fetched.append(request.url))
    docs.route("**/*", lambda route: route.continue_() if route.request.url.startswith(server) else route.abort())
    docs.goto(server + "/docs")
    docs.wait_for_selector(".opblock-summary-path", timeout=20_000)
    paths = docs.eval_on_selector_all(".opblock-summary-path", "nodes => nodes.map(n => n.getAttribute('data-path'))")
    assert {"/results", "/scs", "/cutouts/{cutout_id}/fits", "/models/{model_id}/retire"} <= set(paths)
    assert fetched and all(url.startswith(server) for url in fetched), [u for u in fetched if not u.startswith(server)]
    assert "survey-classifier results" in docs.inner_text(".information-container")
    shot = tmp_path / "api-docs.png"
    docs.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    docs.close()
    keep_screenshot(shot)

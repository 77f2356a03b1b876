"""The picture endpoint cannot take the server's memory: a 64-Mpixel cutout drawn within a stated bound,
renders bounded in number (503 with Retry-After past them), the picture cache bounded in bytes."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from astropy.io import fits
from fastapi.testclient import TestClient
from PIL import Image

from survey_classifier.api import create_app
from survey_classifier.db import make_engine, upgrade
from survey_classifier.db.models import CutoutRow
from survey_classifier.stages.som import SOM_MIRABEST

#: Pixels across the large cutout (8192 x 8192 float32: 256 MiB of pixels, one float64 copy 512 MiB).
SIDE = 8192
#: Where its one bright source is (FITS row, column, 0-based).
SOURCE = (6000, 2000)
#: Largest growth of the serving process's peak resident memory (VmHWM) while drawing it, MiB.
MEMORY_BOUND_MIB = 120


def _write_large(path, *, noise: bool) -> None:
    """The large cutout written band by band (the test never holds it whole); gzip for ``.gz``."""
    header = fits.Header([("SIMPLE", True), ("BITPIX", -32), ("NAXIS", 2), ("NAXIS1", SIDE), ("NAXIS2", SIDE),
                          ("BUNIT", "Jy/beam")])
    rng = np.random.default_rng(3)
    rows, columns = np.mgrid[0:256, 0:SIDE].astype(np.float32)
    opener = (lambda p: gzip.open(p, "wb", compresslevel=1)) if path.suffix == ".gz" else (lambda p: open(p, "wb"))
    with opener(path) as handle:
        handle.write(header.tostring().encode("ascii"))
        for first in range(0, SIDE, 256):
            band = rng.standard_normal(rows.shape, dtype=np.float32) * 1e-4 if noise else np.zeros(rows.shape,
                                                                                                       np.float32)
            if abs(first + 128 - SOURCE[0]) < 400:  # the source's rows
                band += 0.1 * np.exp(-((rows + first - SOURCE[0]) ** 2 + (columns - SOURCE[1]) ** 2) / (2 * 40.0**2))
            handle.write(band.astype(">f4").tobytes())
        handle.write(b"\0" * (-(SIDE * SIDE * 4) % 2880))


@pytest.fixture(scope="module")
def database(tmp_path_factory, mirabest_files):
    """A database naming the large cutout (plain and gzip) and a small real one."""
    folder = tmp_path_factory.mktemp("large-images")
    _write_large(folder / "large.fits", noise=True)
    _write_large(folder / "large.fits.gz", noise=False)
    url = f"sqlite:///{folder / 'images.db'}"
    upgrade(url)
    engine = make_engine(url)
    paths = {"small": str(mirabest_files[0]), "plain": str(folder / "large.fits"),
             "gzip": str(folder / "large.fits.gz")}
    ids = {}
    with engine.begin() as connection:
        for name, path in paths.items():
            ids[name] = connection.execute(CutoutRow.__table__.insert().values(path=path)).inserted_primary_key[0]
    engine.dispose()
    return {"url": url, "ids": ids}


_SERVE_ONE = textwrap.dedent("""
    import json, sys
    from fastapi.testclient import TestClient
    from survey_classifier.api import create_app

    def peak_mib():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM"))

    url, small, large, out, picture, size = sys.argv[1:7]
    with TestClient(create_app(url)) as client:
        assert client.get(f"/cutouts/{small}/{picture}", params={"size": size}).status_code == 200  # libraries in
        before = peak_mib()
        answer = client.get(f"/cutouts/{large}/{picture}", params={"size": size})
        after = peak_mib()
    open(out, "wb").write(answer.content)
    print(json.dumps({"status": answer.status_code, "before": before, "after": after}))
""")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["plain", "gzip"])
def test_a_64_mpixel_cutout_is_drawn_within_the_memory_bound(database, kind, tmp_path):
    out = tmp_path / "large.png"
    done = subprocess.run([sys.executable, "-c", _SERVE_ONE, database["url"], str(database["ids"]["small"]),
                           str(database["ids"][kind]), str(out), "image.png", "1024"],
                          capture_output=True, text=True, timeout=300, env=os.environ)
    assert done.returncode == 0, done.stderr[-3000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured["status"] == 200
    grown = measured["after"] - measured["before"]
    print(f"{kind}: VmHWM {measured['before']:.0f} -> {measured['after']:.0f} MiB (+{grown:.0f})")
    assert grown < MEMORY_BOUND_MIB, measured
    picture = np.asarray(Image.open(out).convert("L"), dtype=float)
    assert picture.shape == (1024, 1024)
    row, column = np.unravel_index(np.argmax(picture), picture.shape)
    scale = 1024 / SIDE  # north up: FITS row 6000 of 8192 is picture row 1023 - 6000 / 8
    assert abs(row - (1023 - SOURCE[0] * scale)) <= 3 and abs(column - SOURCE[1] * scale) <= 3


@pytest.mark.slow
def test_a_64_mpixel_cutout_in_its_neurons_frame_is_drawn_within_the_memory_bound(database, classified_db, tmp_path):
    """som.png reads a large cutout with the same pixel budget as image.png (block-averaged while read), and
    prepares it at that scale: the source is where the map's preprocessing (the whole image to 64 pixels) puts it."""
    import shutil
    import sqlite3

    copy = tmp_path / "som.db"
    shutil.copy(classified_db["path"], copy)
    engine = make_engine(f"sqlite:///{copy}")
    with engine.begin() as connection:
        large = connection.execute(CutoutRow.__table__.insert().values(path=database_path(database, "plain"))
                                   ).inserted_primary_key[0]
    engine.dispose()
    with sqlite3.connect(copy) as connection:
        small, = connection.execute("SELECT cutout_id FROM som_placements LIMIT 1").fetchone()
        columns = [row[1] for row in connection.execute("PRAGMA table_info(som_placements)") if row[1] != "id"]
        chosen = ", ".join(columns)
        copied = ", ".join({"cutout_id": "?", "angle_deg": "0.0", "flip": "0"}.get(name, name) for name in columns)
        connection.execute(f"INSERT INTO som_placements ({chosen}) SELECT {copied} FROM som_placements "
                           "WHERE cutout_id = ?", (large, small))
        # the placements as made by the map whose preparation is the whole image to 64 pixels (version 1), so
        # where the source lands is known; the default map frames each source about its islands
        connection.execute("UPDATE som_placements SET model_ref = ?, model_sha256 = ?",
                           (f"{SOM_MIRABEST.name}:{SOM_MIRABEST.version}", SOM_MIRABEST.sha256))
    out = tmp_path / "large-som.png"
    done = subprocess.run([sys.executable, "-c", _SERVE_ONE, f"sqlite:///{copy}", str(small), str(large), str(out),
                           "som.png", "64"], capture_output=True, text=True, timeout=300, env=os.environ)
    assert done.returncode == 0, done.stderr[-3000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured["status"] == 200
    grown = measured["after"] - measured["before"]
    print(f"som.png of the 8192 x 8192 cutout: VmHWM {measured['before']:.0f} -> {measured['after']:.0f} MiB "
          f"(+{grown:.0f})")
    assert grown < MEMORY_BOUND_MIB, measured
    picture = np.asarray(Image.open(out).convert("L"), dtype=float)
    assert picture.shape == (64, 64)
    row, column = np.unravel_index(np.argmax(picture), picture.shape)
    scale = 64 / SIDE  # the whole image brought to 64 pixels, unturned, north up
    assert abs(row - (63 - SOURCE[0] * scale)) <= 2 and abs(column - SOURCE[1] * scale) <= 2, (row, column)


def database_path(database, kind: str) -> str:
    from sqlalchemy import select

    engine = make_engine(database["url"])
    try:
        with engine.connect() as connection:
            return connection.execute(select(CutoutRow.path).where(CutoutRow.id == database["ids"][kind])).scalar_one()
    finally:
        engine.dispose()


def test_renders_beyond_the_slots_are_turned_away_with_retry_after(database):
    app = create_app(database["url"], render_slots=1)
    small = database["ids"]["small"]
    with TestClient(app) as client:
        with app.state.render_slots.held() as taken:  # another request drawing
            assert taken
            busy = client.get(f"/cutouts/{small}/image.png", params={"size": 64})
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        assert "try again" in busy.json()["detail"]
        assert client.get(f"/cutouts/{small}/image.png", params={"size": 64}).status_code == 200


def test_the_picture_cache_is_bounded_in_bytes(database):
    bound = 400_000
    app = create_app(database["url"], image_cache_bytes=bound)
    small = database["ids"]["small"]
    cache = app.state.image_cache
    with TestClient(app) as client:
        sizes = [1024, 900, 800, 700, 600, 500, 400, 300, 200, 100]
        drawn = {}
        for size in sizes:
            answer = client.get(f"/cutouts/{small}/image.png", params={"size": size, "cmap": "viridis"})
            assert answer.status_code == 200
            assert Image.open(io.BytesIO(answer.content)).size == (size, size)
            drawn[size] = answer.content
            assert cache.nbytes <= bound
        assert sum(len(png) for png in drawn.values()) > bound  # more was drawn than the cache may hold
        assert 0 < len(cache) < len(sizes)
        assert cache.nbytes == sum(len(cache.get(key)) for key in list(cache._entries))
        # the newest is served from the cache, the same bytes
        assert client.get(f"/cutouts/{small}/image.png", params={"size": 100, "cmap": "viridis"}).content == \
            drawn[100]

"""Survey-scale queries: a 1° cone search and the top-100 anomalies over 10^6 rows in PostgreSQL.

Usage::

    python bench/bench_queries.py [--n 1000000] [--db URL] [--repeat 30] [--keep]

Without ``--db`` a fresh database is created on the server of
``$SURVEY_CLASSIFIER_TEST_PG`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``)
and dropped at the end (unless ``--keep``). The schema comes from the
Alembic migrations; ``N`` cutouts with realistic positions (the FIRST
footprint: the north Galactic cap, 7h-17h and -10° to +65°, and the
equatorial strip 21h-3h, -10° to +2°), each with a classification, a SOM
placement and an anomaly score (a heavy-tailed distribution), are loaded
with ``COPY``. Then it times, over ``--repeat`` random centres in the
footprint:

* ``cone (HEALPix ranges)``: :func:`survey_classifier.query.cone_search`, radius 1°;
* ``cone (Dec band + RA window)``: the same through the plain RA/Dec index, for comparison;
* ``cone, full table``: :func:`survey_classifier.query.query_results` with the cone, every
  stage's columns, as the API answers it;
* ``top-100 anomalies (ids)`` and ``top-100 anomalies, full table``
  (:func:`survey_classifier.query.top_anomalies`);
* ``GET /results cone`` and ``GET /anomalies?top=100`` through the FastAPI app in process.

Wall-clock medians and 95th percentiles in milliseconds are printed; the
machine may be shared, so compare figures within one run.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import statistics
import time
import uuid

import numpy as np
import sqlalchemy
from sqlalchemy import and_, or_, select

from survey_classifier.db import make_engine, upgrade
from survey_classifier.db._healpix import healpix_of
from survey_classifier.db.models import CutoutRow
from survey_classifier.query import (
    _ranked_anomalies,
    cone_prefilter,
    cone_search,
    find_variants,
    query_results,
    top_anomalies,
)

ADMIN_URL = os.environ.get("SURVEY_CLASSIFIER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
FOOTPRINT = [  # (ra_min, ra_max, dec_min, dec_max, share of the sources)
    (105.0, 255.0, -10.0, 65.0, 0.88),
    (315.0, 405.0, -10.0, 2.0, 0.12),
]


def sky_positions(n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Positions uniform on the sphere within the footprint boxes."""
    ras, decs = [], []
    for ra_lo, ra_hi, dec_lo, dec_hi, share in FOOTPRINT:
        m = int(round(n * share))
        z = rng.uniform(math.sin(math.radians(dec_lo)), math.sin(math.radians(dec_hi)), m)
        decs.append(np.degrees(np.arcsin(z)))
        ras.append(rng.uniform(ra_lo, ra_hi, m) % 360.0)
    ra, dec = np.concatenate(ras)[:n], np.concatenate(decs)[:n]
    return ra, dec


def _copy(raw, table: str, columns: list[str], lines) -> None:
    with raw.cursor() as cursor, cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        buffer = io.StringIO()
        for i, line in enumerate(lines, 1):
            buffer.write(line)
            if i % 200_000 == 0:
                copy.write(buffer.getvalue())
                buffer = io.StringIO()
        copy.write(buffer.getvalue())


def fill(engine, n: int, seed: int = 0) -> dict[str, float]:
    """Load ``n`` cutouts and one classification, SOM placement and anomaly score each."""
    rng = np.random.default_rng(seed)
    ra, dec = sky_positions(n, rng)
    timings = {}
    start = time.perf_counter()
    pixels = healpix_of(ra, dec)
    timings["healpix"] = time.perf_counter() - start
    now = "2026-11-29 12:00:00+00"
    p_fri = rng.beta(0.6, 0.6, n)
    score = rng.lognormal(0.0, 1.0, n)
    node_x, node_y = rng.integers(0, 10, n), rng.integers(0, 10, n)
    distance = rng.gamma(2.0, 1.0, n)
    angle = rng.uniform(0, 360, n)
    ra, dec, pixels = ra.tolist(), dec.tolist(), pixels.tolist()
    raw = engine.raw_connection()
    try:
        start = time.perf_counter()
        _copy(raw, "cutouts", ["id", "path", "sha256", "hdu", "ra_deg", "dec_deg", "healpix", "pixel_scale_arcsec",
                               "shape_y", "shape_x", "updated_at"],
              (f"{i + 1}\t/survey/first/J{ra[i]:09.5f}{dec[i]:+09.5f}.fits\t{'0' * 64}\t0\t{ra[i]!r}\t{dec[i]!r}\t"
               f"{pixels[i]}\t1.8\t150\t150\t{now}\n" for i in range(n)))
        timings["copy cutouts"] = time.perf_counter() - start
        start = time.perf_counter()
        _copy(raw, "classifications", ["cutout_id", "stage", "stage_version", "model_ref", "label", "probability",
                                       "probabilities", "updated_at"],
              (f"{i + 1}\tcnn\t1\tfr-cnn:1\t{'FRI' if p > 0.5 else 'FRII'}\t{max(p, 1 - p)!r}\t"
               f'{{"FRI": {p!r}, "FRII": {1 - p!r}}}\t{now}\n' for i, p in enumerate(p_fri.tolist())))
        timings["copy classifications"] = time.perf_counter() - start
        start = time.perf_counter()
        _copy(raw, "som_placements", ["cutout_id", "stage", "stage_version", "model_ref", "node_x", "node_y",
                                      "angle_deg", "flip", "distance", "updated_at"],
              (f"{i + 1}\tsom\t1\tpink-som:1\t{x}\t{y}\t{a!r}\t{'t' if a > 180 else 'f'}\t{d!r}\t{now}\n"
               for i, (x, y, a, d) in enumerate(zip(node_x.tolist(), node_y.tolist(), angle.tolist(),
                                                    distance.tolist()))))
        timings["copy som_placements"] = time.perf_counter() - start
        start = time.perf_counter()
        _copy(raw, "anomaly_scores", ["cutout_id", "stage", "stage_version", "model_ref", "score", "components",
                                      "partial", "updated_at"],
              (f'{i + 1}\tanomaly\t1\t\t{s!r}\t{{"som_distance": {s!r}}}\tf\t{now}\n'
               for i, s in enumerate(score.tolist())))
        timings["copy anomaly_scores"] = time.perf_counter() - start
        with raw.cursor() as cursor:
            cursor.execute("SELECT setval('cutouts_id_seq', %s)", (n,))
        raw.commit()
        start = time.perf_counter()
        raw.driver_connection.autocommit = True
        with raw.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
        timings["vacuum analyze"] = time.perf_counter() - start
    finally:
        raw.close()
    return timings


def radec_window(ra: float, dec: float, radius: float):
    """The RA/Dec box prefilter (what the HEALPix ranges replace), for comparison."""
    c = CutoutRow.__table__.c
    condition = c.dec_deg.between(dec - radius, dec + radius)
    half = radius / max(math.cos(math.radians(min(89.9, abs(dec) + radius))), 1e-12)
    lo, hi = (ra - half) % 360.0, (ra + half) % 360.0
    return and_(condition, c.ra_deg.between(lo, hi) if lo <= hi else or_(c.ra_deg >= lo, c.ra_deg <= hi))


def _time(label: str, function, centres, results: dict) -> None:
    function(*centres[0])  # warm the caches once
    times = []
    for centre in centres:
        start = time.perf_counter()
        function(*centre)
        times.append((time.perf_counter() - start) * 1000.0)
    times.sort()
    results[label] = (statistics.median(times), times[int(0.95 * (len(times) - 1))])


def _server_ms(connection, engine, query) -> float:
    """Execution time reported by EXPLAIN ANALYZE, in ms."""
    sql = query.text if isinstance(query, sqlalchemy.TextClause) else str(
        query.compile(engine, compile_kwargs={"literal_binds": True}))
    plan = connection.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS OFF) " + sql).scalars().all()
    return float(next(line for line in plan if line.startswith("Execution Time")).split()[2])


def measure(engine, repeat: int, seed: int = 1) -> dict[str, tuple[float, float]]:
    rng = np.random.default_rng(seed)
    ra, dec = sky_positions(repeat, rng)
    centres = list(zip(ra.tolist(), dec.tolist()))
    results: dict[str, tuple[float, float]] = {}
    counts = []

    def healpix_cone(ra, dec):
        with engine.connect() as connection:
            counts.append(len(cone_search(connection, ra, dec, 1.0)))

    def window_cone(ra, dec):
        c = CutoutRow.__table__.c
        with engine.connect() as connection:
            connection.execute(select(c.id, c.ra_deg, c.dec_deg).where(radec_window(ra, dec, 1.0))).all()

    _time("cone 1° (HEALPix ranges, ids + exact cut)", healpix_cone, centres, results)
    _time("cone 1° (Dec band + RA window, rows only)", window_cone, centres, results)
    _time("cone 1°, full table (query_results)", lambda ra, dec: query_results(engine, ra=ra, dec=dec, radius=1.0),
          centres, results)

    def top_ids(*_):
        with engine.connect() as connection:
            variants = find_variants(connection)
            connection.execute(_ranked_anomalies(variants, "anomaly").limit(100)).scalars().all()

    _time("top-100 anomalies (variant look-up + ids)", top_ids, centres, results)
    _time("top-100 anomalies, full table (top_anomalies)", lambda *_: top_anomalies(engine, 100), centres, results)
    try:
        from fastapi.testclient import TestClient

        from survey_classifier.api import create_app
    except ImportError:
        pass
    else:
        with TestClient(create_app(engine=engine)) as client:
            def get(path, **params):
                response = client.get(path, params=params)
                assert response.status_code == 200, response.text

            _time("GET /results?ra&dec&radius=1 (JSON)", lambda ra, dec: get("/results", ra=ra, dec=dec, radius=1.0,
                                                                             limit=1000), centres, results)
            _time("GET /anomalies?top=100 (JSON)", lambda *_: get("/anomalies", top=100), centres, results)
    results["_sources per 1° cone (median)"] = (statistics.median(counts), max(counts))
    # the database's own execution time (EXPLAIN ANALYZE), free of Python and client overhead
    server: dict[str, list[float]] = {"cone 1° candidates": [], "cone 1° result rows (4 tables)": [],
                                      "top-100 anomaly ids": []}
    with engine.connect() as connection:
        variants = find_variants(connection)
        top = _ranked_anomalies(variants, "anomaly").limit(100)
        for ra_c, dec_c in centres:
            candidates = select(CutoutRow.id, CutoutRow.ra_deg, CutoutRow.dec_deg).where(
                cone_prefilter(ra_c, dec_c, 1.0)
            )
            server["cone 1° candidates"].append(_server_ms(connection, engine, candidates))
            ids = list(cone_search(connection, ra_c, dec_c, 1.0))
            total = 0.0
            for table in ("cutouts", "classifications", "som_placements", "anomaly_scores"):
                column = "id" if table == "cutouts" else "cutout_id"
                listed = ",".join(map(str, ids)) or "NULL"
                total += _server_ms(connection, engine, sqlalchemy.text(
                    f"SELECT * FROM {table} WHERE {column} = ANY(ARRAY[{listed}]::bigint[])"))
            server["cone 1° result rows (4 tables)"].append(total)
            server["top-100 anomaly ids"].append(_server_ms(connection, engine, top))
    for label, values in server.items():
        values.sort()
        results[f"server: {label}"] = (statistics.median(values), values[int(0.95 * (len(values) - 1))])
    with engine.connect() as connection:
        plan = connection.exec_driver_sql(
            "EXPLAIN " + str(select(CutoutRow.id).where(radec_window(*centres[0], 1.0)).compile(
                engine, compile_kwargs={"literal_binds": True}))
        ).scalars().all()
    results["_plan"] = plan
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="cutouts (each with 3 result rows)")
    parser.add_argument("--db", default=None, help="PostgreSQL URL of an empty database")
    parser.add_argument("--repeat", type=int, default=30, help="random centres per query")
    parser.add_argument("--keep", action="store_true", help="keep the database made for the run")
    args = parser.parse_args()
    admin = None
    url = args.db
    if url is None:
        name = f"sc_bench_{uuid.uuid4().hex[:8]}"
        admin = sqlalchemy.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        url = sqlalchemy.engine.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        engine = make_engine(url)
        print(f"loading {args.n} cutouts x (cutout + classification + SOM placement + anomaly score) ...")
        start = time.perf_counter()
        for step, seconds in fill(engine, args.n).items():
            print(f"  {step:<24} {seconds:7.1f} s")
        print(f"  {'total':<24} {time.perf_counter() - start:7.1f} s")
        results = measure(engine, args.repeat)
        plan = results.pop("_plan")
        per_cone = results.pop("_sources per 1° cone (median)")
        print(f"\n{args.repeat} random centres; sources in a 1° cone: median {per_cone[0]:.0f}, max {per_cone[1]:.0f}")
        print(f"{'query':<50} {'median ms':>10} {'p95 ms':>8}")
        for label, (median, p95) in results.items():
            print(f"{label:<50} {median:10.1f} {p95:8.1f}")
        with engine.connect() as connection:
            variants = find_variants(connection)
            ranges = select(CutoutRow.id).where(
                cone_prefilter(180.0, 30.0, 1.0))
            healpix_plan = connection.exec_driver_sql(
                "EXPLAIN " + str(ranges.compile(engine, compile_kwargs={"literal_binds": True}))).scalars().all()
            top_plan = connection.exec_driver_sql(
                "EXPLAIN " + str(_ranked_anomalies(variants, "anomaly").limit(100).compile(
                    engine, compile_kwargs={"literal_binds": True}))).scalars().all()
        print("\nplan, HEALPix cone:\n  " + "\n  ".join(healpix_plan[:6]))
        print("plan, RA/Dec window:\n  " + "\n  ".join(plan[:6]))
        print("plan, top-100 anomalies:\n  " + "\n  ".join(top_plan[:6]))
        engine.dispose()
    finally:
        if admin is not None and not args.keep:
            with admin.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()
        elif admin is not None:
            print(f"kept database: {url}")


if __name__ == "__main__":
    main()

"""Load on the results service: N concurrent clients doing cone searches and /results pages, for a bounded time.

Usage::

    python bench/bench_service.py --db sqlite:///mb.db [--workers 2] [--clients 20] [--duration 20]
    python bench/bench_service.py --url http://127.0.0.1:8000 [--db URL for the positions]

Without ``--url`` it starts ``survey-classifier serve --workers W`` on
``--port`` over ``--db`` and stops it at the end. Each client (a thread
with its own keep-alive connection, all in this process) loops until
``--duration`` seconds have passed or ``--requests`` requests were sent in
all: a cone search (``GET /results?ra&dec&radius``, radius ``--radius``
around a random source of the database, JSON, every stage's columns) with
probability ``--cone-share``, else a page of ``/results`` (``limit=100`` at
a random offset). It prints requests per second in all and the median,
95th and 99th percentile latency of each kind in milliseconds (with
``--json FILE`` also as JSON), and for a server it started the CPU
time its processes used per request (robust on a loaded machine, unlike
the rates), and the CPU time this process (the clients) used per request. Loopback only; the load generator shares
the machine with the server, so compare figures of one machine.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _positions(db_url: str) -> list[tuple[float, float]]:
    from sqlalchemy import select

    from survey_classifier.db import make_engine
    from survey_classifier.db.models import CutoutRow

    engine = make_engine(db_url)
    with engine.connect() as connection:
        rows = connection.execute(select(CutoutRow.ra_deg, CutoutRow.dec_deg).where(CutoutRow.ra_deg.is_not(None)))
        positions = [(float(ra), float(dec)) for ra, dec in rows]
    engine.dispose()
    return positions


def _count(db_url: str) -> int:
    from sqlalchemy import func, select

    from survey_classifier.db import make_engine
    from survey_classifier.db.models import CutoutRow

    engine = make_engine(db_url)
    with engine.connect() as connection:
        n = connection.execute(select(func.count()).select_from(CutoutRow)).scalar_one()
    engine.dispose()
    return int(n)


def _start_server(db_url: str, port: int, workers: int) -> subprocess.Popen:
    command = [str(Path(sys.executable).with_name("survey-classifier")), "serve", "--db", db_url, "--port", str(port),
               "--workers", str(workers)]
    print("starting:", shlex.join(command), flush=True)
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"the server stopped: {server.stderr.read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/stages", timeout=2) as answer:
                if answer.status == 200:
                    return server
        except OSError:
            pass
        time.sleep(0.5)
    _stop(server)
    sys.exit("the server did not answer within 120 s")


def _stop(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def _server_cpu(server: subprocess.Popen | None) -> float | None:
    """CPU seconds (user + system) used so far by the server's processes (its process group), from /proc."""
    if server is None or not Path("/proc/self/stat").exists():
        return None
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) == server.pid:  # the process group the server leads
            total += int(fields[11]) + int(fields[12])
    return total / tick


def _client(host: str, port: int, positions, n_rows: int, args, deadline: float, budget: list[int],
            seed: int, latencies: dict[str, list[float]], failures: list[str], lock: threading.Lock) -> None:
    rng = random.Random(seed)
    connection = http.client.HTTPConnection(host, port, timeout=60)
    while time.monotonic() < deadline:
        with lock:
            if budget[0] <= 0:
                break
            budget[0] -= 1
        if rng.random() < args.cone_share:
            ra, dec = rng.choice(positions)
            kind, params = "cone", {"ra": f"{ra:.5f}", "dec": f"{dec:.5f}", "radius": args.radius}
        else:
            kind, params = "page", {"limit": 100, "offset": rng.randrange(0, max(n_rows - 100, 1))}
        start = time.perf_counter()
        try:
            connection.request("GET", "/results?" + urllib.parse.urlencode(params))
            response = connection.getresponse()
            body = response.read()
            ok = response.status == 200 and bool(json.loads(body)["columns"])
            problem = response.status
        except (OSError, http.client.HTTPException, ValueError) as exc:
            ok, problem = False, exc
            connection.close()
            connection = http.client.HTTPConnection(host, port, timeout=60)
        elapsed = time.perf_counter() - start
        with lock:
            latencies[kind].append(elapsed)
            if not ok:
                failures.append(f"{kind}: {problem}")
    connection.close()


def _load(base: str, positions, n_rows: int, args) -> tuple[dict, list[str], float]:
    parsed = urllib.parse.urlsplit(base)
    latencies: dict[str, list[float]] = {"cone": [], "page": []}
    failures: list[str] = []
    budget, lock = [args.requests], threading.Lock()
    start = time.monotonic()
    deadline = start + args.duration
    threads = [threading.Thread(target=_client, args=(parsed.hostname, parsed.port, positions, n_rows, args, deadline,
                                                      budget, args.seed + i, latencies, failures, lock))
               for i in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, failures, time.monotonic() - start


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="The results database (positions for the cone searches).")
    parser.add_argument("--url", default=None, help="A running service; else one is started over --db.")
    parser.add_argument("--port", type=int, default=8431)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes of the started server.")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--duration", type=float, default=20.0, help="Seconds of load (a bound).")
    parser.add_argument("--requests", type=int, default=100_000, help="Requests in all (a bound).")
    parser.add_argument("--warmup", type=float, default=3.0, help="Seconds of load before the measured run.")
    parser.add_argument("--cone-share", type=float, default=0.5)
    parser.add_argument("--radius", default="0.5deg", help="Cone radius (the API's syntax).")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", default=None, help="Also write the figures to this JSON file.")
    args = parser.parse_args()

    positions, n_rows = _positions(args.db), _count(args.db)
    server = None if args.url else _start_server(args.db, args.port, args.workers)
    base = args.url or f"http://127.0.0.1:{args.port}"
    try:
        if args.warmup > 0:
            warm = argparse.Namespace(**{**vars(args), "duration": args.warmup})
            _load(base, positions, n_rows, warm)
        cpu_before, own_before = _server_cpu(server), time.process_time()
        latencies, failures, elapsed = _load(base, positions, n_rows, args)
        cpu_after, own_after = _server_cpu(server), time.process_time()
    finally:
        if server is not None:
            _stop(server)
    total = sum(len(v) for v in latencies.values())
    figures = {"clients": args.clients, "workers": None if args.url else args.workers, "seconds": round(elapsed, 1),
               "requests": total, "requests_per_s": round(total / elapsed, 1), "failures": len(failures),
               "cutouts": n_rows, "radius": args.radius}
    print(f"{args.clients} clients, {elapsed:.1f} s: {total} requests, {total / elapsed:.1f} requests/s, "
          f"{len(failures)} failed")
    if server is not None and cpu_before is not None and total:
        figures["server_cpu_ms_per_request"] = round(1000 * (cpu_after - cpu_before) / total, 1)
        print(f"  server CPU {figures['server_cpu_ms_per_request']:.1f} ms per request (all its processes)")
    if total:
        figures["client_cpu_ms_per_request"] = round(1000 * (own_after - own_before) / total, 1)
        print(f"  load generator CPU {figures['client_cpu_ms_per_request']:.1f} ms per request (this process, "
              "on the same cores)")
    for kind, values in latencies.items():
        if not values:
            continue
        row = {f"p{q}_ms": round(1000 * _percentile(values, q), 1) for q in (50, 95, 99)}
        row["n"] = len(values)
        row["mean_ms"] = round(1000 * statistics.fmean(values), 1)
        figures[kind] = row
        print(f"  {kind:<5} n={len(values):<6} p50 {row['p50_ms']:8.1f} ms  p95 {row['p95_ms']:8.1f} ms  "
              f"p99 {row['p99_ms']:8.1f} ms")
    if failures:
        print("  first failures:", failures[:5])
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

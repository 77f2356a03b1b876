"""Cutouts per second per core: cut from a survey mosaic on the fly, against reading pre-cut files.

Usage::

    python bench/bench_mosaic.py [--size 8000] [--n 10000] [--cutout 150] [--batch 256] [--s3] [--out DIR]

Makes (once, kept in ``DIR``) a synthetic FIRST-like mosaic of ``size`` x
``size`` pixels (one tile, 1.8 arcsec pixels, SIN projection, FIRST's noise
and beam, 400 injected sources on 8000 pixels), draws ``n`` catalogue positions on it, and
times, in this one process (one core):

* ``plan``: indexing the tile and placing the positions (done once, when
  a run is prepared);
* ``mosaic``: reading the ``n`` cutouts the way a run reads them,
  :meth:`Pipeline.process_batch` with no stages, in batches of ``batch``
  (each batch opens the tile once, memory-mapped);
* ``files``: the same cutouts written beforehand as ``n`` FITS files, read
  the same way (``read_cutout`` per file);
* with ``--s3``, both again from a local S3 server (moto in server mode,
  started here): the tile read in bands of rows by range requests, the
  files one GET each.

CPU time (``time.process_time``) is given beside wall time: the machine may
be shared, and a local S3 server spends its own CPU in another process.
Both the tile and the files are in the page cache (just written), so the
local figures compare the work of cutting with that of opening files.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from survey_classifier.cutout import CutoutSource
from survey_classifier.io.mosaics import CutoutSize, read_mosaic_cutout, write_cutout_fits
from survey_classifier.io.tiles import TileCache
from survey_classifier.pipeline import Pipeline


def make_mosaic(folder: Path, size: int) -> Path:
    from survey_classifier.synthetic import make_synthetic_mosaic

    tile = folder / "survey" / "tiles" / "tile_0_0.fits"
    if not tile.exists():
        start = time.perf_counter()
        n_sources = max(1, min(400, (size // 400) ** 2))  # 400 on 8000 pixels; fewer on small test tiles
        make_synthetic_mosaic(folder / "survey", n_sources=n_sources, tile_shape=(size, size), grid=(1, 1), overlap=0,
                              seed=0)
        print(f"made a {size}x{size} mosaic in {time.perf_counter() - start:.0f} s: {tile}", flush=True)
    return tile


def positions(tile: Path, n: int, cutout: int, seed: int = 1) -> list[CutoutSource]:
    from astropy.io import fits
    from astropy.wcs import WCS

    wcs = WCS(fits.getheader(tile))
    ny, nx = wcs.pixel_shape[1], wcs.pixel_shape[0]
    rng = np.random.default_rng(seed)
    pixels = np.column_stack([rng.uniform(cutout, nx - cutout, n), rng.uniform(cutout, ny - cutout, n)])
    world = wcs.wcs_pix2world(pixels, 0)
    return [CutoutSource(path="", catalogue_id=f"P{i:05d}", ra_deg=float(ra), dec_deg=float(dec))
            for i, (ra, dec) in enumerate(world)]


def plan(sources, tiles_spec: str, cutout: int, db: Path):
    from survey_classifier.db import make_engine, upgrade
    from survey_classifier.footprints import index_tiles, plan_cutouts

    url = f"sqlite:///{db}"
    upgrade(url)
    engine = make_engine(url)
    cpu, wall = time.process_time(), time.perf_counter()
    planned = plan_cutouts(sources, index_tiles(engine, tiles_spec), CutoutSize(float(cutout), "px"))
    timing = {"cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall}
    engine.dispose()
    return planned, timing


def read_all(sources, batch: int) -> dict:
    """Read every source as a run does (Pipeline.process_batch, no stages); the timing per cutout."""
    pipeline = Pipeline([])
    failed = 0
    cpu, wall = time.process_time(), time.perf_counter()
    for first in range(0, len(sources), batch):
        result = pipeline.process_batch(sources[first : first + batch])
        failed += sum(1 for outcome in result.outcomes if outcome.errors)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if failed:
        print(f"  warning: {failed} cutouts failed")
    n = len(sources)
    return {"n": n, "failed": failed, "cpu_s": cpu, "wall_s": wall, "cutouts_per_cpu_s": n / cpu,
            "cutouts_per_wall_s": n / wall, "cpu_ms_per_cutout": 1e3 * cpu / n}


def write_files(planned, folder: Path) -> list[CutoutSource]:
    """The cutouts as FITS files (named by id), once."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = []
    with TileCache() as tiles:
        for source in planned:
            path = folder / f"{source.catalogue_id}.fits"
            if not path.exists():
                write_cutout_fits(read_mosaic_cutout(source, tiles=tiles), str(folder))
            sources.append(CutoutSource(path=str(path), catalogue_id=source.catalogue_id))
    return sources


class MotoServer:
    """A local S3 server (moto) for the duration of the benchmark."""

    def __init__(self, log: Path):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": self.endpoint})
        self._log = open(log, "w")
        binary = Path(sys.executable).parent / "moto_server"
        self.process = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(self.port)], stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        msg = "moto_server did not start"
        raise RuntimeError(msg)

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)
        self._log.close()


def s3_runs(tile: Path, planned, files, batch: int, out: Path) -> dict:
    import fsspec

    server = MotoServer(out / "moto.log")
    try:
        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        fs.mkdir("bench")
        start = time.perf_counter()
        fs.put_file(str(tile), "bench/tiles/tile_0_0.fits")
        fs.put([s.path for s in files], [f"bench/files/{Path(s.path).name}" for s in files])
        print(f"  uploaded the tile and {len(files)} files to {server.endpoint} in {time.perf_counter() - start:.0f} s")
        local_prefix = f"mosaic:{tile}"
        remote_sources = [
            CutoutSource(path=s.path.replace(local_prefix, "mosaic:s3://bench/tiles/tile_0_0.fits"),
                         catalogue_id=s.catalogue_id)
            for s in planned
        ]
        remote_files = [CutoutSource(path=f"s3://bench/files/{Path(s.path).name}", catalogue_id=s.catalogue_id)
                        for s in files]
        with TileCache() as tiles:  # the range requests one batch makes
            for source in remote_sources[:batch]:
                read_mosaic_cutout(source, tiles=tiles)
            requests_per_batch = tiles.requests()
        before = _requests(out / "moto.log")
        mosaic = read_all(remote_sources, batch)
        after = _requests(out / "moto.log")
        mosaic["range_requests_first_batch"] = requests_per_batch
        mosaic["tile_requests"] = {k: after[k] - before[k] for k in after}  # whole run, from the server's log
        return {"mosaic": mosaic, "files": read_all(remote_files, batch)}
    finally:
        server.stop()


def _requests(log: Path) -> dict:
    """Requests the S3 server logged for the tile: ranged GETs (206) and HEADs."""
    counts = {"range_get": 0, "head": 0}
    for line in log.read_text(errors="replace").splitlines():
        if "/bench/tiles/tile_0_0.fits" in line:
            counts["range_get"] += "GET" in line and " 206 " in line
            counts["head"] += "HEAD" in line
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8000)
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--cutout", type=int, default=150)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--s3", action="store_true", help="Also time both from a local S3 server (moto).")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "mosaic")
    parser.add_argument("--keep-files", action="store_true", help="Keep the pre-cut files afterwards.")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    tile = make_mosaic(args.out, args.size)
    sources = positions(tile, args.n, args.cutout)
    (args.out / "index.db").unlink(missing_ok=True)
    planned, plan_timing = plan(sources, str(tile.parent), args.cutout, args.out / "index.db")
    print(f"plan: {args.n} positions placed in {plan_timing['wall_s']:.2f} s")
    files = write_files(planned, args.out / "files")
    report = {
        "size": args.size, "n": args.n, "cutout": args.cutout, "batch": args.batch, "plan": plan_timing,
        "tile_mb": tile.stat().st_size / 2**20,
        "local": {"mosaic": read_all(planned, args.batch), "files": read_all(files, args.batch)},
    }
    if args.s3:
        report["s3"] = s3_runs(tile, planned, files, args.batch, args.out)
    for where in [k for k in ("local", "s3") if k in report]:
        for kind, timing in report[where].items():
            print(f"{where:5s} {kind:6s}: {timing['cutouts_per_cpu_s']:7.0f} cutouts per CPU second "
                  f"({timing['cpu_ms_per_cutout']:.3f} ms), {timing['cutouts_per_wall_s']:7.0f} per wall second")
    if "s3" in report:
        print(f"requests for the tile on S3, whole run: {report['s3']['mosaic']['tile_requests']}")
    (args.out / "mosaic.json").write_text(json.dumps(report, indent=2))
    if not args.keep_files:
        shutil.rmtree(args.out / "files")


if __name__ == "__main__":
    main()

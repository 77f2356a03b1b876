"""Time reading FITS cutouts: read_cutout against plain astropy.

Usage::

    python bench/bench_read.py [--n N] [--repeat R]

Reads the mirabest FITS files (``$SURVEY_CLASSIFIER_DATA/mirabest/fits``) and
prints, per file, the CPU time of

* ``naive``: ``fits.getdata`` + ``WCS(fits.getheader(...))`` (two opens,
  full header verification, wcslib over every card);
* ``astropy once``: one ``fits.open(memmap=False)``, ``WCS(header)``;
* ``read_cutout``: survey_classifier.io.read_cutout (bytes read once, sha256,
  cards decoded directly, wcslib given only the non-commentary cards).

CPU time (``time.process_time``) is reported beside wall time because the
machine may be shared; compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from survey_classifier.io import read_cutout


def data_dir() -> Path:
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return Path(os.environ.get("SURVEY_CLASSIFIER_DATA", default))


def naive(path):
    data = fits.getdata(path)
    wcs = WCS(fits.getheader(path))
    return data, wcs.wcs_pix2world([[74.5, 74.5]], 0)


def astropy_once(path):
    with fits.open(path, memmap=False) as hdulist:
        data = hdulist[0].data
        wcs = WCS(hdulist[0].header)
    return data, wcs.wcs_pix2world([[74.5, 74.5]], 0)


def timed(function, files, repeat):
    best_cpu = best_wall = float("inf")
    for _ in range(repeat):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for path in files:
            function(path)
        best_cpu = min(best_cpu, time.process_time() - cpu0)
        best_wall = min(best_wall, time.perf_counter() - wall0)
    return best_cpu / len(files), best_wall / len(files)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=None, help="number of files (default: all)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions; the best is kept")
    args = parser.parse_args(argv)
    files = sorted((data_dir() / "mirabest" / "fits").glob("*.fits"))[: args.n]
    if not files:
        raise SystemExit(f"no FITS files under {data_dir() / 'mirabest' / 'fits'}")
    warnings.simplefilter("ignore", FITSFixedWarning)
    for path in files:  # warm the page cache
        path.read_bytes()
    print(f"{len(files)} files, best of {args.repeat}")
    results = {}
    for name, function in (
        ("naive", naive),
        ("astropy once", astropy_once),
        ("read_cutout", read_cutout),
    ):
        cpu, wall = timed(function, files, args.repeat)
        results[name] = cpu
        print(f"{name:>14}: {cpu * 1e3:7.3f} ms CPU  {wall * 1e3:7.3f} ms wall per file"
              f"  ({1 / cpu:7.0f} files/s CPU)")
    ratio = results["naive"] / results["read_cutout"]
    print(f"read_cutout is {ratio:.1f}x faster than naive astropy (CPU)")


if __name__ == "__main__":
    main()

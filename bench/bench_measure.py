"""Time the measure stage on the mirabest cutouts.

Usage::

    python bench/bench_measure.py [--n N] [--repeat R]

Prints, per cutout, the CPU time of the sigma-clipped background
(``clipped_background`` against ``astropy.stats.sigma_clipped_stats``, which
give the same numbers) and of the whole ``MeasureStage``. CPU time
(``time.process_time``) is reported because the machine may be shared;
compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from astropy.stats import sigma_clipped_stats

from survey_classifier.io import read_cutout
from survey_classifier.stages.measure import MeasureStage
from survey_classifier.stats import clipped_background


def data_dir() -> Path:
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return Path(os.environ.get("SURVEY_CLASSIFIER_DATA", default))


def cpu_per_item(function, items, repeat):
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for item in items:
            function(item)
        best = min(best, time.process_time() - start)
    return best / len(items)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=None, help="number of cutouts (default: all)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions; the best is kept")
    args = parser.parse_args(argv)
    files = sorted((data_dir() / "mirabest" / "fits").glob("*.fits"))[: args.n]
    cutouts = [read_cutout(path) for path in files]
    stage = MeasureStage()
    print(f"{len(cutouts)} cutouts of {cutouts[0].data.shape}, best of {args.repeat}")
    figures = {
        "astropy sigma_clipped_stats": cpu_per_item(
            lambda c: sigma_clipped_stats(c.data, sigma=3.0, maxiters=5), cutouts, args.repeat
        ),
        "clipped_background": cpu_per_item(lambda c: clipped_background(c.data), cutouts, args.repeat),
        "MeasureStage (all of it)": cpu_per_item(stage.measure, cutouts, args.repeat),
    }
    for name, seconds in figures.items():
        print(f"{name:>28}: {seconds * 1e3:7.3f} ms CPU per cutout ({1 / seconds:7.0f}/s)")
    ratio = figures["astropy sigma_clipped_stats"] / figures["clipped_background"]
    print(f"clipped_background is {ratio:.1f}x faster than astropy's sigma_clipped_stats")


if __name__ == "__main__":
    main()

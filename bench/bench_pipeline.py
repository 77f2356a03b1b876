"""Throughput of the in-process pipeline on the mirabest cutouts.

Reports cutouts/s for the whole run and the seconds spent reading,
preprocessing (the default PreprocessConfig, as models use it), in each
stage and in the database. Run on one core::

    taskset -c 0 .venv/bin/python bench/bench_pipeline.py [--db URL] [--stages measure]

Timings on a shared machine are noisy: compare the split within one run,
and read the CPU-seconds figure (what one core delivers when it is not
shared) next to the wall-clock one.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from survey_classifier.db import make_engine, upgrade
from survey_classifier.io.inputs import expand_inputs
from survey_classifier.pipeline import run_pipeline
from survey_classifier.preprocess import PreprocessConfig
from survey_classifier.stages.base import Stage
from survey_classifier.stages.registry import load_stage

DATA = Path(os.environ.get("SURVEY_CLASSIFIER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


class PreprocessOnly(Stage):
    """Asks the pipeline for the default model preprocessing, stores nothing heavy."""

    name = "preprocess_only"
    version = "1"
    result_kind = "measurement"

    def __init__(self, *, size=64):
        self.size = size

    @property
    def preprocess_config(self):
        return PreprocessConfig(size=self.size)

    def process(self, batch):
        return [
            {"peak_flux_jy": None, "integrated_flux_jy": None, "n_islands": None, "las_arcsec": None,
             "centroid_offset_arcsec": None}
            for _ in batch
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=None, help="database URL (default: a fresh SQLite file)")
    parser.add_argument("--stages", default="measure")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    sources = expand_inputs([str(DATA / "mirabest" / "fits")])
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db or f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        engine = make_engine(url)
        for label, stages in (
            ("read + preprocess + store", [PreprocessOnly()]),
            (f"read + {args.stages} + store", [load_stage(n) for n in args.stages.split(",")]),
        ):
            start, cpu = time.perf_counter(), time.process_time()
            summary = run_pipeline(sources, stages, engine, batch_size=args.batch_size)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            n = summary.n_cutouts
            split = ", ".join(f"{k} {v / n * 1e3:.2f} ms" for k, v in summary.timings.items() if v > 0)
            print(
                f"{label}: {n} cutouts in {wall:.2f} s wall = {n / wall:.0f} cutouts/s; "
                f"CPU {cpu:.2f} s = {n / cpu:.0f} cutouts per CPU-second (wall per cutout: {split})"
            )
        engine.dispose()


if __name__ == "__main__":
    main()

"""Benchmark of the rotation-invariant SOM: fast polar core vs brute force, side by side.

Run from the repository root::

    .venv/bin/python bench/bench_som.py               # everything (a few minutes)
    .venv/bin/python bench/bench_som.py --brute-subset 300 --rgz-images 5000

Prints, in one run on the same data and settings (1027 MiraBest cutouts at
64x64, 10x10 map, 64x64 neurons, circular region of diameter 45, 360
rotations + flip, one online epoch, identical initial neurons and order):

1. brute force (vectorised: rotate every image to all 720 orientations at
   every step with one bilinear ``map_coordinates`` call, compare with all
   neurons in one product; and the same with a precomputed sparse rotation
   matrix, an optimised brute force) vs the fast core: time per image (wall
   and CPU), speed-ups, quantization errors (each map measured with the
   brute-force distance, so the comparison is like for like);
2. per-image cost against PINK 2.5 (CPU, 2 threads, ~160 ms/image here);
3. the Radio Galaxy Zoo configuration (124x124 images, hexagonal 21x21 map,
   64x64 neurons, 360 rotations + flip) timed on >= 5000 augmented cutouts
   and projected to PINK's 176,750-image epoch;
4. mapping throughput of the ``som`` stage on one core (preprocessing
   included, and without it; the fast core alone beside the default, which
   re-measures the best orientations in pixels); ``--mapping-model`` times a
   given map (e.g. the shipped one) with its own preprocessing.

Everything runs with BLAS on one thread (the fast core sets this itself).
CPU times (``time.process_time``) are printed beside wall times because the
machine is shared: they are the fairer figure when other jobs are running.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SURVEY_CLASSIFIER_DATA", REPO.parent / "shared" / "data"))
PINK_MS_PER_IMAGE = 160.0
RGZ_IMAGES = 176_750
PINK_RGZ_CPU_S = 35_373.0
PINK_RGZ_GPU_S = 477.0


def read_cutouts():
    from survey_classifier.io.fits import read_cutout

    files = sorted((DATA / "mirabest" / "fits").glob("*.fits"))
    return [read_cutout(path) for path in files]


def preprocessed(cutouts, size):
    from survey_classifier.preprocess import PreprocessConfig

    config = PreprocessConfig(size=size)
    return np.stack([cutout.preprocessed(config) for cutout in cutouts]), config


def compare_brute_force(images, subset):
    from survey_classifier.som import RotationInvariantSOM
    from survey_classifier.som.reference import BruteForceSOM

    settings = dict(grid_shape=(10, 10), neuron_size=64, region_diameter=45, n_rotations=360, flip=True)
    rng = np.random.default_rng(0)
    initial = images[rng.choice(len(images), 100, replace=False)]
    print(f"\n== 1. brute force vs fast core: {len(images)} cutouts 64x64, 10x10 map, "
          "region diameter 45, 360 rotations + flip, one online epoch ==")  # fmt: skip

    def run(label, model, n=None):
        n = len(images) if n is None else n
        wall, cpu = time.perf_counter(), time.process_time()
        model.fit(images[:n]) if not isinstance(model, BruteForceSOM) else model.fit(
            images, initial_neurons=initial, n_steps=n
        )
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(f"{label:34s} {wall:7.2f} s wall = {1000 * wall / n:7.3f} ms/image;"
              f" CPU {1000 * cpu / n:7.3f} ms/image")  # fmt: skip
        return 1000 * wall / n, 1000 * cpu / n

    fast = RotationInvariantSOM(**settings, init=initial, shuffle=False, track_errors=False)
    fast_ms, fast_cpu = run("fast core, online, n_freq auto (72)", fast)
    full = RotationInvariantSOM(**settings, init=initial, shuffle=False, track_errors=False, n_freq=None)
    full_ms, full_cpu = run("fast core, online, all 181 freqs", full)
    batch = RotationInvariantSOM(**settings, init=initial, shuffle=False, track_errors=False, batch_size=32)
    run("fast core, mini-batch 32", batch)
    n_brute = len(images) if subset is None else min(subset, len(images))
    with threadpool_limits(1):  # like the fast core; threaded BLAS only loses on a busy machine
        brute = BruteForceSOM(**settings, rotation="map_coordinates")
        brute_ms, brute_cpu = run("brute force, map_coordinates", brute, n_brute)
        sparse = BruteForceSOM(**settings, rotation="sparse")
        sparse_ms, sparse_cpu = run("brute force, sparse rotation matrix", sparse, n_brute)
    if n_brute != len(images):
        print(f"  (brute force timed on the first {n_brute} images only)")
    for label, wall, cpu in (("map_coordinates", brute_ms, brute_cpu), ("sparse-matrix", sparse_ms, sparse_cpu)):
        print(f"speed-up vs {label} brute force: wall {wall / fast_ms:5.1f} x, CPU {cpu / fast_cpu:5.1f} x "
              f"[all freqs: {wall / full_ms:.1f} x / {cpu / full_cpu:.1f} x]  (target >= 20 x)")  # fmt: skip

    # Quantization errors, all measured with the brute-force distance.
    scorer = BruteForceSOM(**settings)
    scorer.mask_ = brute.mask_
    scorer.neurons_ = fast.prototypes_
    qe_fast = scorer.quantization_error(images)
    scorer.neurons_ = batch.prototypes_
    qe_batch = scorer.quantization_error(images)
    qe_fast_own = fast.errors(images)["quantization_error"]
    scorer.neurons_ = full.prototypes_
    qe_full = scorer.quantization_error(images)
    if n_brute == len(images):
        qe_brute = brute.quantization_error(images)
        print(f"QE brute force map:     {qe_brute:.4f}")
        print(f"QE fast map (online):   {qe_fast:.4f}  ({100 * (qe_fast / qe_brute - 1):+.2f} % vs brute; "
              f"target <= +2 %)  [fast core's own QE {qe_fast_own:.4f}]")  # fmt: skip
        print(f"QE fast map (all freqs): {qe_full:.4f}  ({100 * (qe_full / qe_brute - 1):+.2f} %)")
        print(f"QE fast map (batch 32): {qe_batch:.4f}  ({100 * (qe_batch / qe_brute - 1):+.2f} %)"
              )  # fmt: skip
    else:
        print(f"QE fast map (online):   {qe_fast:.4f} (brute-force epoch not completed: no QE comparison)")
    print(f"\n== 2. against PINK 2.5 (CPU, 2 threads): {PINK_MS_PER_IMAGE:.0f} ms/image ==")
    print(f"fast core online: {fast_ms:.3f} ms/image wall -> {PINK_MS_PER_IMAGE / fast_ms:.0f} x better; "
          f"{fast_cpu:.3f} ms/image CPU -> {PINK_MS_PER_IMAGE / fast_cpu:.0f} x "
          f"(target >= 50 x, i.e. <= {PINK_MS_PER_IMAGE / 50:.1f} ms/image)")  # fmt: skip


def augmented(images, n, rng):
    from scipy import ndimage

    out = np.empty((n, *images.shape[1:]), np.float32)
    for i in range(n):
        image = images[rng.integers(len(images))]
        if rng.random() < 0.5:
            image = image[::-1]
        out[i] = ndimage.rotate(image, rng.uniform(0, 360), reshape=False, order=1)
    return np.clip(out, 0.0, None)


def rgz_projection(cutouts, n_images, n_freq):
    from survey_classifier.som import RotationInvariantSOM

    images, _ = preprocessed(cutouts, 124)
    data = augmented(images, n_images, np.random.default_rng(1))
    print(f"\n== 3. RGZ configuration: {n_images} augmented 124x124 images, hexagonal 21x21 "
          f"(331 nodes), 64x64 neurons, region 64, 360 rotations + flip, n_freq={n_freq} ==")  # fmt: skip
    som = RotationInvariantSOM(grid_shape=(21, 21), layout="hexagonal", neuron_size=64,
                               region_diameter=64, n_rotations=360, flip=True, n_freq=n_freq,
                               random_state=0, track_errors=False)  # fmt: skip
    start, cpu = time.perf_counter(), time.process_time()
    som.fit(data)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    per_image = seconds / n_images
    print(f"CPU time {cpu:.1f} s = {1000 * cpu / n_images:.2f} ms/image -> projected "
          f"{cpu / n_images * RGZ_IMAGES / 60:.1f} min of CPU")  # fmt: skip
    projected = per_image * RGZ_IMAGES
    print(f"{seconds:.1f} s for {n_images} images = {1000 * per_image:.2f} ms/image")
    print(f"projected epoch of {RGZ_IMAGES} images on this machine: {projected:.0f} s = "
          f"{projected / 60:.1f} min (target < 30 min; PINK: {PINK_RGZ_CPU_S:.0f} s on 24 cores, "
          f"{PINK_RGZ_GPU_S:.0f} s on 2 GPUs)")  # fmt: skip


def mapping_throughput(cutouts, model=None):
    from survey_classifier.preprocess import PreprocessConfig
    from survey_classifier.som import RotationInvariantSOM
    from survey_classifier.stages.som import SOMStage

    if model is None:
        images, config = preprocessed(cutouts, 64)
        som = RotationInvariantSOM(grid_shape=(10, 10), neuron_size=64, region_diameter=45,
                                   random_state=0, track_errors=False, preprocess_config=config)  # fmt: skip
        som.fit(images[:200])
        path = Path(os.environ.get("TMPDIR", "/tmp")) / "bench_som_map.npz"
        som.save(path)
    else:
        som = RotationInvariantSOM.load(model)
        config = PreprocessConfig.from_dict(som.preprocess_dict_)
        images = np.stack([cutout.preprocessed(config) for cutout in cutouts])
        path = Path(model)
    print(f"\n== 4. mapping throughput, one core, {som.grid_.layout} {som.grid_.n_nodes}-node map of "
          f"{som.neuron_size}x{som.neuron_size} neurons, region {som.region_diameter_:g}, {som.n_rotations} rot "
          f"+ flip ({'trained on 200 cutouts' if model is None else model}) ==")  # fmt: skip
    with threadpool_limits(1):
        start, cpu = time.perf_counter(), time.process_time()
        som.map(images, refine_within=None)
        fast = len(images) / (time.perf_counter() - start)
        fast_cpu = len(images) / (time.process_time() - cpu)
        start, cpu = time.perf_counter(), time.process_time()
        som.map(images)
        pure = len(images) / (time.perf_counter() - start)
        pure_cpu = len(images) / (time.process_time() - cpu)
        for cutout in cutouts:
            cutout._preprocessed.clear()
        start, cpu = time.perf_counter(), time.process_time()
        [cutout.preprocessed(config) for cutout in cutouts]
        prep = len(cutouts) / (time.perf_counter() - start)
        prep_cpu = len(cutouts) / (time.process_time() - cpu)
        stage = SOMStage(model=str(path))
        stage.setup()
        for cutout in cutouts:
            cutout._preprocessed.clear()
        start, cpu = time.perf_counter(), time.process_time()
        for first in range(0, len(cutouts), 64):
            stage.process(cutouts[first : first + 64])
        full = len(cutouts) / (time.perf_counter() - start)
        full_cpu = len(cutouts) / (time.process_time() - cpu)
    print(f"map, fast core only:           {fast:7.0f} cutouts/s wall, {fast_cpu:7.0f} per CPU-second")
    print(f"map, refined (the default):    {pure:7.0f} cutouts/s wall, {pure_cpu:7.0f} per CPU-second")
    print(f"preprocessing alone:           {prep:7.0f} cutouts/s wall, {prep_cpu:7.0f} per CPU-second")
    print(f"som stage incl. preprocessing: {full:7.0f} cutouts/s wall, {full_cpu:7.0f} per CPU-second "
          "(target >= 200)")  # fmt: skip
    if model is None:
        path.unlink()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brute-subset", type=int, default=None,
                        help="time the brute force on this many images only (default: all)")
    parser.add_argument("--rgz-images", type=int, default=5000)
    parser.add_argument("--rgz-n-freq", default="auto",
                        help="angular frequencies for the RGZ run ('auto' = ceil(pi * 32 px) + 1 = 102)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["brute", "rgz", "mapping"])
    parser.add_argument("--mapping-model", default=None,
                        help="som.npz whose own preprocessing the mapping test uses (default: a map trained here)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    cutouts = read_cutouts()
    print(f"read {len(cutouts)} MiraBest cutouts in {time.perf_counter() - start:.1f} s; "
          f"{os.cpu_count()} CPUs, numpy {np.__version__}")  # fmt: skip
    if "brute" not in args.skip:
        images, _ = preprocessed(cutouts, 64)
        compare_brute_force(images, args.brute_subset)
    if "rgz" not in args.skip:
        rgz_projection(cutouts, args.rgz_images, args.rgz_n_freq if args.rgz_n_freq == "auto" else int(args.rgz_n_freq))
    if "mapping" not in args.skip:
        mapping_throughput(cutouts, args.mapping_model)
    return 0


if __name__ == "__main__":
    sys.exit(main())

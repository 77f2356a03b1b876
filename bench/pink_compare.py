"""PINK's own mapping of a survey-classifier map and of a PINK map trained with the same settings.

Run from the repository root::

    # the PINK data file of the prepared cutouts and the map as a PINK SOM file (no PINK needed)
    .venv/bin/python bench/pink_compare.py --som survey_classifier/models/som-mirabest-3/som.npz \\
        --out /tmp/pink-compare
    # with a PINK 2 binary: train PINK on the same data with the same settings, map both with PINK
    nice -n 10 .venv/bin/python bench/pink_compare.py --som survey_classifier/models/som-mirabest-3/som.npz \\
        --out /tmp/pink-compare --pink /path/to/Pink --images 100 --stride 10 --epochs 2 --threads 2

The cutouts (the MiraBest FITS files in shared/data, every ``--stride``-th
up to ``--images``) are prepared with the map's own preprocessing record,
exactly as the ``som`` stage prepares them (any of its options: centre,
extent, islands, circle, scaling, stretch), and written as ``data.bin``,
whose header comment holds that record. ``ours.bin`` is a map trained here on exactly those
images with the map's settings (grid, layout, neuron size, region,
rotations, flip, epochs, schedules), ``shipped.bin`` the given map itself.
PINK trains ``pink.bin`` on ``data.bin`` with the same grid, layout, neuron
and circular-region size, rotations, flip and epochs; PINK keeps its update
constant within a run, so the decaying learning rate and neighbourhood
width are followed in one PINK run per epoch (``--init FILE`` continues from the
previous one; ``pink-epoch-N.bin`` files let a stopped run resume), each
with the schedule's values in the middle of that epoch (``unitygaussian``:
``lr * exp(-d^2 / 2 sigma^2)``, the update rule used here). Then PINK maps
``data.bin`` on every map (``--map``, float distances) and the quantization
error is the mean over images of PINK's smallest distance.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SURVEY_CLASSIFIER_DATA", REPO.parent / "shared" / "data"))


def prepared_images(som, count, stride):
    from survey_classifier.io.fits import read_cutout
    from survey_classifier.preprocess import PreprocessConfig

    config = PreprocessConfig.from_dict(som.preprocess_dict_)
    files = sorted((DATA / "mirabest" / "fits").glob("*.fits"))[::stride][:count]
    return np.stack([read_cutout(path).preprocessed(config) for path in files])


def pink_settings(som) -> list[str]:
    """PINK options for the map's geometry and mapping settings."""
    width, height = (int(n) for n in som.grid_.index_xy.max(axis=0) + 1)
    options = [
        "--cuda-off", "--layout", som.grid_.layout, "--som-width", str(width), "--som-height", str(height),
        "--neuron-dimension", str(int(som.neuron_size)),
        "--euclidean-distance-dimension", str(int(round(som.region_diameter_))),
        "--euclidean-distance-shape", "circular", "--euclidean-distance-type", "float",
        "--numrot", str(int(som.n_rotations)),
    ]  # fmt: skip
    return options if som.flip else [*options, "--flip-off"]


def train_pink(pink, som, data, out, threads, log):
    """One PINK run per epoch, following the map's decaying schedule."""
    steps_per_epoch = som.total_steps_ // int(som.n_epochs)
    start = time.perf_counter()
    previous = None
    for epoch in range(int(som.n_epochs)):
        result = out / f"pink-epoch-{epoch + 1}.bin"
        lr, sigma = som.schedule(int((epoch + 0.5) * steps_per_epoch))
        if not result.is_file():  # a run stopped part way resumes from its last epoch
            init = ["--init", "random"] if previous is None else ["--init", str(previous)]  # a file name: file_init
            command = [pink, *pink_settings(som), *init, "--num-iter", "1", "--numthreads", str(threads),
                       "--seed", str(1234 + epoch), "--dist-func", "unitygaussian", f"{sigma:.6g}", f"{lr:.6g}",
                       "--progress", "1", "--train", str(data), str(out / "pink-next.bin")]  # fmt: skip
            _run(command, log)
            (out / "pink-next.bin").replace(result)
        print(f"PINK epoch {epoch + 1}: lr {lr:.4f}, sigma {sigma:.3f} ({time.perf_counter() - start:.0f} s)",
              flush=True)  # fmt: skip
        previous = result
    return previous


def pink_qe(pink, som, data, som_file, out, threads, log) -> float:
    from survey_classifier.som.pink import read_mapping

    mapping = out / f"map-{som_file.stem}.bin"
    _run([pink, *pink_settings(som), "--numthreads", str(threads), "--map", str(data), str(mapping),
          str(som_file)], log)  # fmt: skip
    distances, _ = read_mapping(mapping)
    return float(distances.min(axis=1).mean())


def _run(command, log):
    with open(log, "a") as handle:
        handle.write(" ".join(command) + "\n")
        handle.flush()
        subprocess.run(command, check=True, stdout=handle, stderr=subprocess.STDOUT)


def main(argv=None):
    from survey_classifier.som import RotationInvariantSOM
    from survey_classifier.som.pink import write_data, write_som

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--som", required=True, help="som.npz to compare")
    parser.add_argument("--out", required=True, help="folder for the PINK files")
    parser.add_argument("--pink", default=None, help="PINK 2 binary (without it: write the files only)")
    parser.add_argument("--images", type=int, default=1027)
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=None,
                        help="train ours and PINK for this many epochs instead of the map's (a cheaper comparison)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shipped = RotationInvariantSOM.load(args.som)
    images = prepared_images(shipped, args.images, args.stride)
    record = json.dumps(shipped.preprocess_dict_, sort_keys=True)
    print(f"preparation (the map's record): {record}", flush=True)
    data = write_data(out / "data.bin", images, comment=f"prepared as {args.som} records:\n{record}")
    write_som(out / "shipped.bin", shipped)
    params = {name: getattr(shipped, name) for name in shipped._SAVED_PARAMS}
    if args.epochs is not None:
        params["n_epochs"] = args.epochs
    ours = RotationInvariantSOM(**params, preprocess_config=shipped.preprocess_config, track_errors=False)
    start = time.perf_counter()
    ours.fit(images)
    print(f"survey-classifier map on {len(images)} images, {ours.n_epochs} epochs (its schedules stretched "
          f"over them): "
          f"{time.perf_counter() - start:.1f} s", flush=True)  # fmt: skip
    write_som(out / "ours.bin", ours)
    own = {"shipped": shipped.errors(images)["quantization_error"], "ours": ours.errors(images)["quantization_error"]}
    print(f"PINK data file {data} ({len(images)} images {images.shape[1]}x{images.shape[2]}); SOM files "
          f"shipped.bin, ours.bin; QE by survey-classifier's own mapping: shipped {own['shipped']:.4f}, "
          f"ours {own['ours']:.4f}")  # fmt: skip
    if args.pink is None:
        print("no --pink binary given: PINK's mapping not run")
        return 0
    log = out / "pink.log"
    pink_map = train_pink(args.pink, ours, data, out, args.threads, log)
    for name, path in (("shipped", out / "shipped.bin"), ("ours", out / "ours.bin"), ("pink", pink_map)):
        print(f"QE by PINK's mapping, {name:8s}: {pink_qe(args.pink, ours, data, path, out, args.threads, log):.4f}",
              flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How often mapping makes the brute force's choice, by ``refine_within``.

Run from the repository root (about three minutes on the 2-core machine)::

    .venv/bin/python bench/som_exactness.py

For two configurations it maps real MiraBest cutouts with
``RotationInvariantSOM.map(refine_within=...)`` and compares each result with
the bilinear brute force (:func:`reference_distances`: every one of the 720
orientations, pixel by pixel in the circular region, with the map's cartesian
prototypes). A cutout agrees when node and flip are the same, the angle is
within one step and the squared distance within 2 % (the test of issue #4).

* native: central 64 x 64 pixels at FIRST's 1.8 arcsec, region 45, a 3 x 3
  map trained on every 14th cutout, 73 other cutouts;
* shipped: the shipped 10 x 10 map (whole 150 px cutouts shrunk to 64 px,
  region 64), every 10th cutout from the 4th (103);
* bench map: the 10 x 10 map of bench/bench_som.py's mapping test (region 45,
  one epoch on the first 200 shrunk cutouts), 55 later cutouts.

It also prints the mapping speed of each setting (one BLAS thread).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from survey_classifier.io.fits import read_cutout
from survey_classifier.preprocess import PreprocessConfig
from survey_classifier.som import RotationInvariantSOM
from survey_classifier.som.reference import reference_distances
from survey_classifier.stages.som import SOM_MIRABEST

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SURVEY_CLASSIFIER_DATA", REPO.parent / "shared" / "data"))
#: (refine_within, refine_limit); (0.3, 128) is the default
SETTINGS = (
    (None, None), (0.02, 128), (0.05, 128), (0.1, 128), (0.3, 32), (0.3, 64), (0.3, 128),
    (0.3, 256), (0.3, None),
)  # fmt: skip


def _agrees(mapping, row, reference):
    flip, node, shift = np.unravel_index(reference.argmin(), reference.shape)
    gap = abs(float(mapping["angle_deg"][row]) - float(shift)) % 360
    return bool(
        mapping["node"][row] == node
        and mapping["flip"][row] == bool(flip)
        and min(gap, 360 - gap) <= 1.0
        and abs(mapping["distance"][row] ** 2 / reference.min() - 1) < 0.02
    )


def compare(name, som, images):
    prototypes = som.prototypes_
    diameter = som.region_diameter_
    references = [
        reference_distances(image, prototypes, n_rotations=360, region_diameter=diameter)
        for image in images
    ]
    som.map(images[:4])  # builds the lookup tables
    print(f"\n== {name}: {len(images)} cutouts, region {diameter:g}, {som.grid_.n_nodes} nodes ==")
    print("refine_within  refine_limit  agree      worst distance error  images/s")
    for within, limit in SETTINGS:
        start = time.perf_counter()
        mapping = som.map(images, refine_within=within, refine_limit=limit)
        rate = len(images) / (time.perf_counter() - start)
        agree = sum(_agrees(mapping, row, ref) for row, ref in enumerate(references))
        worst = max(
            abs(mapping["distance"][row] ** 2 / ref.min() - 1) for row, ref in enumerate(references)
        )
        print(f"{within!s:>13}  {limit!s:>12}  {agree:3d}/{len(images):<3d}  {100 * worst:19.1f} %  "
              f"{rate:8.0f}")  # fmt: skip


def main():
    files = sorted((DATA / "mirabest" / "fits").glob("*.fits"))
    native_config = PreprocessConfig(size=64, crop=64)
    native = np.stack([read_cutout(path).preprocessed(native_config) for path in files[::7]])
    som = RotationInvariantSOM(
        grid_shape=(3, 3), neuron_size=64, region_diameter=45, random_state=1, track_errors=False
    ).fit(native[::2])
    compare("native", som, native[1::2])
    shipped = RotationInvariantSOM.load(SOM_MIRABEST.path())  # som-mirabest:1, as in docs/som.md
    config = PreprocessConfig.from_dict(shipped.preprocess_dict_)
    images = np.stack([read_cutout(path).preprocessed(config) for path in files[3::10]])
    compare("shipped", shipped, images)
    # a 10 x 10 map as bench/bench_som.py trains it (one epoch on 200 cutouts): less
    # converged, so its fast distances are flatter and more orientations are candidates
    config = PreprocessConfig(size=64)
    shrunk = np.stack([read_cutout(path).preprocessed(config) for path in files[:200]])
    young = RotationInvariantSOM(
        grid_shape=(10, 10), neuron_size=64, region_diameter=45, random_state=0, track_errors=False
    ).fit(shrunk)
    images = np.stack([read_cutout(path).preprocessed(config) for path in files[205::15]])
    compare("bench map", young, images)


if __name__ == "__main__":
    main()

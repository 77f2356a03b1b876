"""How far can any map of prepared images go? Rotation-invariant k-nearest neighbours.

A SOM labels an unseen source by the training sources that share its
best-matching neuron: a prototype stands for its members. The nearest
training *sources* themselves, under the same rotation- and flip-invariant
distance, are what the prototypes summarise; how often their vote is right
says how well FR I and FR II separate in the prepared pictures at all,
whatever the map. This measures it with the protocol of
``bench/som_morphology.py`` (same folds, same 655 scored sources, development
data only)::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/som_knn.py --prep islands_host_only --k 1 3 5 9 15 25

For each fold the training folds' images become the neurons of a one-row
map (initialised, never trained), each held-out image is compared with every one of them
at its best rotation and flip (the fast core's distances), and its class is
the majority of the ``k`` nearest FR I / FR II training sources (all
confidences, as the neuron labels use; ties go to the nearer). Reported:
pooled accuracy per ``k`` with the range over the folds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
from som_morphology import FOLDS, FR, PREPARATIONS, folds, prepared, read_catalogue


def neighbour_distances(images, config, train, test):
    """(len(test), len(train)) rotation- and flip-invariant distances."""
    from survey_classifier.som import RotationInvariantSOM

    som = RotationInvariantSOM(
        grid_shape=(1, len(train)), neuron_size=config.size, region_diameter=config.size,
        init=images[train], n_epochs=1, preprocess_config=config, track_errors=False,
    )  # fmt: skip
    som.initialise(images[train])
    return som.map(images[test], refine_within=None, return_distances=True)["node_distances"]


def vote(distances, classes, k):
    """Majority class of the ``k`` nearest; a tie goes to the class of the nearest."""
    order = np.argsort(distances, axis=1)[:, :k]
    nearest = classes[order]  # (n, k) class indices
    counts = np.stack([(nearest == c).sum(axis=1) for c in range(len(FR))], axis=1)
    winner = counts.argmax(axis=1)
    tied = counts.max(axis=1) == counts.min(axis=1)
    return np.where(tied, nearest[:, 0], winner)


def run(prep, ks):
    cutouts, rows = read_catalogue()
    fold_of = folds(rows)
    images, config = prepared(cutouts, prep)
    fr_class = np.array([row["fr_class"] for row in rows])
    confident = np.array([row["confidence"] == "confident" for row in rows])
    target = confident & np.isin(fr_class, FR)
    right = {k: [] for k in ks}
    started = time.perf_counter()
    for fold in range(FOLDS):
        voters = np.flatnonzero((fold_of != fold) & np.isin(fr_class, FR))
        scored = np.flatnonzero((fold_of == fold) & target)
        distances = neighbour_distances(images, config, voters, scored)
        classes = np.searchsorted(FR, fr_class[voters])
        for k in ks:
            said = np.array(FR)[vote(distances, classes, k)]
            right[k].append(said == fr_class[scored])
    result = {"prep": prep, "seconds": round(time.perf_counter() - started, 1)}
    for k in ks:
        pooled = np.concatenate(right[k])
        folds_acc = [float(np.mean(r)) for r in right[k]]
        result[f"k{k}"] = {"accuracy": float(np.mean(pooled)), "folds": folds_acc, "n": int(pooled.size)}
        print(f"{prep} k={k:3d}: accuracy {np.mean(pooled):.3f} (folds {min(folds_acc):.3f}-{max(folds_acc):.3f}, "
              f"n={pooled.size})", flush=True)  # fmt: skip
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prep", nargs="+", default=["islands_host_only"], choices=sorted(PREPARATIONS))
    parser.add_argument("--k", nargs="+", type=int, default=[1, 3, 5, 9, 15, 25])
    parser.add_argument("--out", default=None, help="append one JSON line per preparation")
    args = parser.parse_args(argv)
    for prep in args.prep:
        result = run(prep, args.k)
        if args.out:
            with open(args.out, "a") as handle:
                handle.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

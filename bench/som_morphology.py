"""Which preparation and map make a SOM that separates FR I from FR II?

Run from the repository root (each candidate about a minute on the 2-core machine)::

    nice -n 19 .venv/bin/python bench/som_morphology.py --stage preparations
    nice -n 19 .venv/bin/python bench/som_morphology.py --stage maps --preps islands
    nice -n 19 .venv/bin/python bench/som_morphology.py --candidate islands:cartesian:8x8:10

Protocol (development data only: the 1027 MiraBest cutouts in shared/data;
the sources the team holds back are never read). Five source-disjoint folds,
stratified by class and confidence, fixed seed. For every fold a map is
trained on the other four folds (labels unused), its neurons are labelled
with the FR I / FR II sources of those folds (majority, see
:class:`survey_classifier.som.labels.NeuronLabels`), and the sources of the
held-out fold are read off from their best-matching neuron. Reported per
candidate (means over the folds unless said):

* ``qe``, ``te``: quantization and topographic error of the held-out fold
  (exact pixel distances, as mapping reports them);
* ``purity``: fraction of the training folds' sources (FR I, FR II and
  hybrid, all confidences) in their neuron's majority class;
* ``accuracy``: neuron-label accuracy on the held-out confident FR I / FR II
  sources (all five folds pooled);
* ``reliable``: fraction of those sources whose best-matching distance is at
  or below the distance up to which pooled labels are right >= 90 % of the
  time (``reliable_distance``), and that distance;
* ``train_s``: training time of one fold's map (wall, one BLAS thread).

Each result is appended as one JSON line to ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SURVEY_CLASSIFIER_DATA", REPO.parent / "shared" / "data"))
FOLDS = 5
FR = ("FRI", "FRII")

#: Candidate preparations (PreprocessConfig keywords); "whole" is som-mirabest 1's.
PREPARATIONS = {
    "whole": {"size": 64},
    "islands": {"size": 64, "centre": "emission", "extent": "islands", "circle_diameter": 64, "scaling": "peak"},
    "islands_only": {"size": 64, "centre": "emission", "extent": "islands", "islands_only": True,
                     "circle_diameter": 64, "scaling": "peak"},
    "islands_total": {"size": 64, "centre": "emission", "extent": "islands", "islands_only": True,
                      "circle_diameter": 64, "scaling": "total"},
    "islands_loose": {"size": 64, "centre": "emission", "extent": "islands", "islands_only": True,
                      "source_fill": 0.6, "crop_min": 24, "circle_diameter": 64, "scaling": "peak"},
    "arcsec": {"size": 64, "centre": "emission", "extent": "arcsec", "crop_arcsec": 180.0,
               "islands_only": True, "circle_diameter": 64, "scaling": "peak"},
    "islands_sqrt": {"size": 64, "centre": "emission", "extent": "islands", "islands_only": True,
                     "circle_diameter": 64, "scaling": "peak", "stretch": "sqrt"},
    "islands_log": {"size": 64, "centre": "emission", "extent": "islands", "islands_only": True,
                    "circle_diameter": 64, "scaling": "peak", "stretch": "log"},
    "islands_min40": {"size": 64, "centre": "emission", "extent": "islands", "islands_only": True,
                      "crop_min": 40, "circle_diameter": 64, "scaling": "peak"},
    "arcsec_120": {"size": 64, "centre": "emission", "extent": "arcsec", "crop_arcsec": 120.0,
                   "islands_only": True, "circle_diameter": 64, "scaling": "peak"},
    "islands_tight": {"size": 64, "centre": "emission", "extent": "islands", "source_fill": 0.95, "crop_min": 10,
                      "circle_diameter": 64, "scaling": "peak"},
    "islands_reach20": {"size": 64, "centre": "emission", "extent": "islands", "island_reach": 20.0,
                        "circle_diameter": 64, "scaling": "peak"},
    "islands_reach40": {"size": 64, "centre": "emission", "extent": "islands", "island_reach": 40.0,
                        "circle_diameter": 64, "scaling": "peak"},
    "islands_host": {"size": 64, "centre": "image", "extent": "islands", "circle_diameter": 64, "scaling": "peak"},
    "islands_host_reach40": {"size": 64, "centre": "image", "extent": "islands", "island_reach": 40.0,
                             "circle_diameter": 64, "scaling": "peak"},
    "islands_host_only": {"size": 64, "centre": "image", "extent": "islands", "islands_only": True,
                          "circle_diameter": 64, "scaling": "peak"},
    "islands_host_extent": {"size": 64, "centre": "image", "extent": "islands", "islands_only": True,
                            "island_reach": 40.0, "source_flux_fraction": 1.0, "circle_diameter": 64,
                            "scaling": "peak"},
    "islands_host_only_80": {"size": 80, "centre": "image", "extent": "islands", "islands_only": True,
                             "circle_diameter": 80, "scaling": "peak"},
    "islands_square": {"size": 64, "centre": "emission", "extent": "islands", "circle_diameter": 64,
                       "scaling": "peak", "stretch": "square"},
    "islands_clip5": {"size": 64, "centre": "emission", "extent": "islands", "clip_sigma": 5.0,
                      "circle_diameter": 64, "scaling": "peak"},
    "islands_48": {"size": 48, "centre": "emission", "extent": "islands", "islands_only": True,
                   "circle_diameter": 48, "scaling": "peak"},
}  # fmt: skip


def read_catalogue():
    """Cutouts and their labels, in the order of labels.csv."""
    from survey_classifier.io.fits import read_cutout

    with open(DATA / "mirabest" / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    cutouts = [read_cutout(DATA / "mirabest" / "fits" / row["file"]) for row in rows]
    return cutouts, rows


def folds(rows, seed=0):
    """Fold number of each source: stratified by class and confidence."""
    from sklearn.model_selection import StratifiedKFold

    strata = [f"{row['fr_class']}/{row['confidence']}" for row in rows]
    assignment = np.empty(len(rows), dtype=int)
    splitter = StratifiedKFold(FOLDS, shuffle=True, random_state=seed)
    for fold, (_, test) in enumerate(splitter.split(np.zeros(len(rows)), strata)):
        assignment[test] = fold
    return assignment


def prepared(cutouts, name):
    from survey_classifier.preprocess import PreprocessConfig

    config = PreprocessConfig(**PREPARATIONS[name])
    return np.stack([cutout.preprocessed(config) for cutout in cutouts]), config


def make_som(config, layout, grid, epochs, seed=0, sigma_end=None):
    """The candidate's map; ``sigma_end`` (nodes) replaces the default final neighbourhood width 0.5."""
    from survey_classifier.som import RotationInvariantSOM

    sigma = None if sigma_end is None else (max(grid) / 2.0, float(sigma_end))
    return RotationInvariantSOM(
        grid_shape=grid, layout=layout, neuron_size=config.size, region_diameter=config.size,
        n_epochs=epochs, random_state=seed, preprocess_config=config, track_errors=False, sigma=sigma,
    )  # fmt: skip


def evaluate(images, config, rows, fold_of, layout, grid, epochs, keep=None, seed=0, smoothing=0.0, sigma_end=None):
    """Cross-validated figures of one candidate (see the module docstring).

    ``smoothing`` (nodes) labels the neurons with Gaussian-smoothed votes
    (``NeuronLabels.fit(..., smoothing=...)``, what ``neurons.json`` would
    ship); ``accuracy`` is then theirs and ``accuracy_majority`` the plain
    majority's.
    """
    from survey_classifier.som.labels import NeuronLabels, reliable_distance

    fr_class = np.array([row["fr_class"] for row in rows])
    confident = np.array([row["confidence"] == "confident" for row in rows])
    target = confident & np.isin(fr_class, FR)
    per_fold, distance, correct, others = [], [], [], {}
    for fold in range(FOLDS):
        train, test = np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)
        som = make_som(config, layout, grid, epochs, seed, sigma_end)
        start = time.perf_counter()
        som.fit(images[train])
        train_s = time.perf_counter() - start
        seen = som.map(images[train])
        unseen = som.map(images[test])
        labels = NeuronLabels.fit(som.grid_, seen["node"], fr_class[train], FR, smoothing=smoothing)
        majority = NeuronLabels.fit(som.grid_, seen["node"], fr_class[train], FR)
        purity = NeuronLabels.fit(som.grid_, seen["node"], fr_class[train], ("FRI", "FRII", "hybrid"))
        scored = target[test]
        said = labels.read_off(unseen["node"][scored])
        correct.append(said == fr_class[test][scored])
        others.setdefault("majority", []).append(majority.read_off(unseen["node"][scored]) == fr_class[test][scored])
        near = som.map(images[test][scored], refine_within=None, return_distances=True)["node_distances"]
        if keep is not None:
            keep.update({f"train_nodes_{fold}": seen["node"], f"test_nodes_{fold}": unseen["node"],
                         f"test_distance_{fold}": unseen["distance"], f"near_{fold}": near,
                         "grid_distances": som.grid_.distances})  # fmt: skip
        for name, votes in _other_read_offs(som.grid_, labels.counts, near).items():
            others.setdefault(name, []).append(np.array(FR)[votes] == fr_class[test][scored])
        distance.append(unseen["distance"][scored])
        neighbours = som.grid_.are_neighbours(unseen["node"], unseen["second_node"])
        per_fold.append({
            "qe": float(np.mean(unseen["distance"])), "te": float(1 - np.mean(neighbours)),
            "purity": purity.mean_purity, "accuracy": float(np.mean(correct[-1])), "train_s": train_s,
        })  # fmt: skip
    correct, distance = np.concatenate(correct), np.concatenate(distance)
    limit = reliable_distance(distance, correct)
    result = {key: float(np.mean([f[key] for f in per_fold])) for key in per_fold[0]}
    result.update(
        accuracy=float(np.mean(correct)), accuracy_folds=[f["accuracy"] for f in per_fold],
        n_scored=int(correct.size), reliable_distance=limit,
        reliable=float(np.mean(distance <= limit)) if limit is not None else 0.0,
        reliable_accuracy=float(np.mean(correct[distance <= limit])) if limit is not None else None,
        **{f"accuracy_{name}": float(np.mean(np.concatenate(right))) for name, right in others.items()},
    )  # fmt: skip
    return result


def _other_read_offs(grid, counts, node_distances):
    """Class index per source from neuron counts other than the BMU's majority (for comparison).

    ``smooth``: counts summed over the map with a Gaussian of one node;
    ``top3``: counts of the three nearest neurons, weighted 3, 2, 1;
    ``dw``: every labelled neuron's class fractions weighted by
    ``exp(-(d_j^2 - d_1^2) / d_1^2)``, ``d_j`` the source's distance to neuron
    ``j`` at that neuron's best rotation and flip, ``d_1`` the smallest.
    """
    smoothed = np.exp(-0.5 * grid.distances**2) @ counts
    best = np.argsort(node_distances, axis=1)[:, :3]
    top3 = sum(weight * counts[best[:, k]] for k, weight in enumerate((3, 2, 1)))
    totals = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    squared = np.asarray(node_distances, dtype=float) ** 2
    nearest = np.maximum(squared.min(axis=1, keepdims=True), 1e-12)
    weighted = np.exp(-(squared - nearest) / nearest) @ fractions
    return {"smooth": smoothed[best[:, 0]].argmax(axis=1), "top3": top3.argmax(axis=1), "dw": weighted.argmax(axis=1)}


def run(candidates, out, seed=0):
    cutouts, rows = read_catalogue()
    fold_of = folds(rows)
    images = {}
    for prep, layout, grid, epochs, options in candidates:
        if prep not in images:
            images[prep] = prepared(cutouts, prep)
        data, config = images[prep]
        start = time.perf_counter()
        keep = {"fold_of": fold_of}
        result = evaluate(data, config, rows, fold_of, layout, grid, epochs, keep, seed, **options)
        suffix = "".join(f"-{name}{value:g}" for name, value in sorted(options.items()))
        if os.environ.get("SOM_MORPHOLOGY_KEEP"):
            folder = Path(os.environ["SOM_MORPHOLOGY_KEEP"])
            folder.mkdir(parents=True, exist_ok=True)
            np.savez(folder / f"{prep}-{layout}-{grid[0]}x{grid[1]}-{epochs}{suffix}-seed{seed}.npz", **keep)
        record = {"prep": prep, "layout": layout, "grid": f"{grid[0]}x{grid[1]}", "epochs": epochs, "seed": seed,
                  **options, **result, "wall_s": time.perf_counter() - start}  # fmt: skip
        print(f"{prep:14s} {layout:9s} {record['grid']:6s} {epochs:3d} ep: accuracy {record['accuracy']:.3f} "
              f"(folds {min(record['accuracy_folds']):.3f}-{max(record['accuracy_folds']):.3f}) "
              f"purity {record['purity']:.3f} QE {record['qe']:.3f} TE {record['te']:.3f} "
              f"reliable {record['reliable']:.2f} train {record['train_s']:.1f} s {suffix} "
              f"[smooth {record['accuracy_smooth']:.3f}, top3 {record['accuracy_top3']:.3f}, "
              f"dw {record['accuracy_dw']:.3f}, majority {record['accuracy_majority']:.3f}]", flush=True)  # fmt: skip
        with open(out, "a") as handle:
            handle.write(json.dumps(record) + "\n")


def table(path):
    """The results in ``path`` (JSON lines) as a markdown table, in the order run."""
    print("| preparation | map | epochs | accuracy (folds) | smoothed labels | purity | QE | TE | reliable "
          "(distance) | train s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    with open(path) as handle:
        for line in handle:
            r = json.loads(line)
            limit = "-" if r["reliable_distance"] is None else f"{r['reliable_distance']:.2f}"
            options = "".join(f", {name} {r[name]:g}" for name in ("smoothing", "sigma_end") if name in r)
            print(f"| {r['prep']}{options} | {r['layout']} {r['grid']} | {r['epochs']} | {r['accuracy']:.3f} "
                  f"({min(r['accuracy_folds']):.2f}-{max(r['accuracy_folds']):.2f}) | "
                  f"{r.get('accuracy_smooth', float('nan')):.3f} | {r['purity']:.3f} | {r['qe']:.3f} | "
                  f"{r['te']:.3f} | {r['reliable']:.2f} ({limit}) | {r['train_s']:.1f} |")  # fmt: skip


def _grid(text):
    ny, nx = (int(part) for part in text.split("x"))
    return ny, nx


def _options(fields, parser):
    """``smoothing=1.5`` (neuron labels) and ``sigma_end=1.0`` (final neighbourhood width), in nodes."""
    options = {}
    for field in fields:
        name, _, value = field.partition("=")
        if name not in ("smoothing", "sigma_end") or not value:
            parser.error(f"unknown candidate option {field!r}: give smoothing=NODES or sigma_end=NODES")
        options[name] = float(value)
    return options


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=["preparations", "maps", "epochs"])
    parser.add_argument("--preps", nargs="*", default=list(PREPARATIONS))
    parser.add_argument("--candidate", nargs="*", default=[],
                        help="PREP:LAYOUT:GRID:EPOCHS[:smoothing=NODES][:sigma_end=NODES], "
                             "e.g. islands:hexagonal:9x9:10 or islands_host_only:cartesian:20x20:10:smoothing=1.5")
    parser.add_argument("--seed", type=int, default=0, help="seed of the maps (the folds keep seed 0)")
    parser.add_argument("--out", default=str(REPO / "bench" / "som_morphology.jsonl"))
    parser.add_argument("--table", default=None, help="print the results in this JSON-lines file as markdown")
    args = parser.parse_args(argv)
    if args.table:
        table(args.table)
        return 0
    candidates = []
    if args.stage == "preparations":
        candidates = [(prep, "cartesian", (10, 10), 10, {}) for prep in args.preps]
    elif args.stage == "maps":
        maps = [("cartesian", (n, n)) for n in (6, 8, 10, 12)] + [("hexagonal", (d, d)) for d in (7, 9, 11, 13)]
        candidates = [(prep, layout, grid, 10, {}) for prep in args.preps for layout, grid in maps]
    for text in args.candidate:
        prep, layout, grid, epochs, *extra = text.split(":")
        candidates.append((prep, layout, _grid(grid), int(epochs), _options(extra, parser)))
    if not candidates:
        parser.error("give --stage or --candidate")
    run(candidates, args.out, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())

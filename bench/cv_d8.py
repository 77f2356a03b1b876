"""Candidate D (``d8`` from scratch) against A (``fr-cnn:2``'s recipe), paired by seed and fold (docs/cnn.md).

Reads ``ROOT/cv-D-SEED/crossval.json`` (``train cnn --cross-validate 5``)
and A's shipped out-of-fold results
(``survey_classifier/models/fr-cnn-2/crossval/cv-A-SEED.json``), pairs the
folds both have done, and prints each one's fold accuracies, the paired
difference D − A with its standard error, and the pre-registered rule's
answer, only when all 15 (seed, fold) pairs are done:

    python bench/cv_d8.py --root DIR --seeds 0,1,2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from survey_classifier.cnn.ensemble import fold_accuracies, out_of_fold

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "survey_classifier" / "models" / "fr-cnn-2" / "crossval"
PAIRS_NEEDED = 15


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="folder holding cv-D-SEED/")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    runs = [[SHIPPED / f"cv-A-{seed}.json", args.root / f"cv-D-{seed}" / "crossval.json"]
            for seed in (int(s) for s in args.seeds.split(","))]
    runs = [pair for pair in runs if pair[1].exists()]
    if not runs:
        raise SystemExit(f"no cv-D-SEED/crossval.json under {args.root}")
    oof = out_of_fold(runs, common_folds=True)
    a, d = fold_accuracies(oof, [0]), fold_accuracies(oof, [1])
    done = ~np.isnan(d)
    for name, table in (("A", a), ("D", d)):
        rows = " | ".join(", ".join(f"{100 * v:.1f}" for v in row[~np.isnan(row)]) for row in table)
        values = table[done]
        print(f"{name}: mean of {values.size} fold accuracies {100 * values.mean():.1f} "
              f"+- {100 * values.std(ddof=1) / np.sqrt(values.size):.1f} %   per fold (by seed): {rows}")
    difference = (d - a)[done]
    mean, sem = difference.mean(), difference.std(ddof=1) / np.sqrt(difference.size)
    print(f"D - A = {100 * mean:+.2f} +- {100 * sem:.2f} points (paired, {difference.size} (seed, fold) pairs)")
    if difference.size < PAIRS_NEEDED:
        print(f"incomplete: {difference.size} of {PAIRS_NEEDED} pairs; the rule is not applied")
    else:
        print("D replaces A for fr-cnn:3" if mean > 2 * sem else "not more than 2 s.e.: keep A, nothing shipped")


if __name__ == "__main__":
    main()

"""Apply the pre-registered rule for fr-cnn:2 to the cross-validation runs (docs/cnn.md).

Reads ``ROOT/cv-A-SEED/crossval.json`` and ``ROOT/cv-B-SEED/crossval.json``
(or ``ROOT/cv-A-SEED.json``, as shipped in ``models/fr-cnn-2/crossval/``)
(``train cnn --cross-validate 5``, which records every held-out source's
probabilities), forms E, the average of A's and B's probabilities before
the temperature for the same seed, fold and source, and prints the
candidates' fold accuracies, the paired differences and the choice:

    python bench/cv_choice.py --root survey_classifier/models/fr-cnn-2/crossval --seeds 0,1,2

Only (seed, fold) runs that both A and B completed are used (a stopped run
keeps the folds it finished); their number is printed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from survey_classifier.cnn.calibration import softmax
from survey_classifier.cnn.ensemble import fold_accuracies, out_of_fold

CANDIDATES = {"A": [0], "B": [1], "E": [0, 1]}  # in cost order: members of each among (A, B)


def choose(accuracies: dict[str, np.ndarray]) -> tuple[str, list[str]]:
    """The rule: start from the cheapest; a dearer candidate replaces the choice if better by > 2 s.e."""
    names = list(accuracies)
    chosen, lines = names[0], []
    for name in names[1:]:
        difference = accuracies[name] - accuracies[chosen]
        mean, sem = difference.mean(), difference.std(ddof=1) / np.sqrt(len(difference))
        replaces = mean > 2 * sem
        lines.append(f"{name} - {chosen} = {100 * mean:+.2f} +- {100 * sem:.2f} points (paired, "
                     f"{len(difference)} runs): {'more' if replaces else 'not more'} than 2 s.e. "
                     f"-> {'choose ' + name if replaces else 'keep ' + chosen}")
        if replaces:
            chosen = name
    return chosen, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    def path(recipe, seed):  # a run's output directory, or its crossval.json copied as cv-A-0.json
        folder = args.root / f"cv-{recipe}-{seed}" / "crossval.json"
        return folder if folder.exists() else args.root / f"cv-{recipe}-{seed}.json"

    runs = [[path(r, seed) for r in "AB"] for seed in seeds]
    report([pair for pair in runs if all(p.exists() for p in pair)], CANDIDATES, "A and B")


def report(runs: list[list[Path]], candidates: dict[str, list[int]], members: str) -> str:
    """Print the candidates' table, fold accuracies and paired differences; return the rule's choice.

    ``runs`` lists, per seed, one ``crossval.json`` per member recipe; ``candidates`` maps each
    candidate, cheapest first, to the indices of the recipes whose probabilities it averages.
    """
    oof = out_of_fold(runs, common_folds=True)
    table = {name: fold_accuracies(oof, members_of) for name, members_of in candidates.items()}
    done = ~np.isnan(next(iter(table.values())))
    flat = {name: values[done] for name, values in table.items()}
    n = int(done.sum())
    print(f"{len(runs)} seeds, {n} (seed, fold) runs done by all of {members} "
          f"(folds per seed: {done.sum(axis=1).tolist()})")
    print()
    print("| candidate | runs | mean of fold accuracies ± s.e. | pooled, by seed |")
    print("|---|---|---|---|")
    for name, members_of in candidates.items():
        values = flat[name]
        pooled = []
        mean_p = softmax(oof["logits"][members_of]).mean(axis=0)
        correct = mean_p.argmax(axis=1) == oof["targets"]
        for r, paths in enumerate(runs):
            seed = json.loads(paths[0].read_text())["training"]["seed"]
            pick = oof["run"] == r
            pooled.append(f"seed {seed}: {100 * correct[pick].mean():.1f} % ({correct[pick].sum()}/{pick.sum()})")
        print(f"| {name} | {n} | {100 * values.mean():.1f} ± {100 * values.std(ddof=1) / np.sqrt(n):.1f} % "
              f"| {'; '.join(pooled)} |")
    print()
    for name in candidates:
        print(f"{name} per fold: " + " | ".join(
            ", ".join(f"{100 * v:.1f}" for v in row[~np.isnan(row)]) for row in table[name]))
    print()
    chosen, lines = choose(flat)
    print("\n".join(lines))
    print(f"chosen: {chosen}")
    return chosen


if __name__ == "__main__":
    main()

"""Ensembles of A with D2 (E2) and with B and D2 (E3), by the pre-registered rule (docs/cnn.md).

No network is trained: the candidates average the committed out-of-fold
probabilities (before the temperature) of A and B
(``survey_classifier/models/fr-cnn-2/crossval/cv-{A,B}-SEED.json``) and of D2,
the fixed ``d8`` (``bench/results/cv-d8-fixed/cv-D-SEED/crossval.json``), for
the same seed, fold and source:

    python bench/cv_ensembles.py --seeds 0,1,2
    python bench/cv_ensembles.py --d8 bench/results/cv-d8-narrow   # E2n: A with d8:1
    python bench/cv_ensembles.py --challenger bench/results/cv-d8-precise   # E2p against E2

With ``--d8`` the runs of another ``d8`` member replace D2's; the rows keep their names.
With ``--challenger`` the candidates are E2 (the shipped fr-cnn:3's recipe) and E2c, A with
the challenger's ``d8`` member instead of D2, of the same cost: E2c replaces E2 only if better
by the rule.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cv_choice import report

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "survey_classifier" / "models" / "fr-cnn-2" / "crossval"
D2 = REPO / "bench" / "results" / "cv-d8-fixed"
CANDIDATES = {"A": [0], "E2": [0, 2], "E3": [0, 1, 2]}  # cost order; members among (A, B, D2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--d8", type=Path, default=D2,
                        help="folder of the d8 member's cv-D-SEED/ runs (bench/results/cv-d8-narrow for D2n)")
    parser.add_argument("--challenger", type=Path, default=None,
                        help="folder of another d8 member's cv-D-SEED/ runs, compared in E2's place")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = [[SHIPPED / f"cv-A-{seed}.json", SHIPPED / f"cv-B-{seed}.json", args.d8 / f"cv-D-{seed}" / "crossval.json"]
            for seed in seeds]
    if args.challenger is None:
        report(runs, CANDIDATES, "A, B and D2")
        return
    for run, seed in zip(runs, seeds, strict=True):
        run.append(args.challenger / f"cv-D-{seed}" / "crossval.json")
    report(runs, {"E2": [0, 2], "E2c": [0, 3]}, "A, B, D2 and the challenger")


if __name__ == "__main__":
    main()

"""The active-learning re-ranking on two halves of MiraBest, and on all of it.

The method (:class:`survey_classifier.labels.ranking.InterestRanker`) and
its defaults were chosen on the even rows of ``mirabest/labels.csv``
("half A", 43 of 514 sources rare) and are reported on the odd rows
("half B", 43 of 513) and on all 1027, as the anomaly weights were
(``bench/anomaly_halves.py``). A simulated user views the top ``K`` sources
not yet viewed each round and labels them from the catalogue (rare =
hybrid or non-standard morphology); the table gives the rare sources found
among the first 20, 50 and 100 viewed with the re-ranking and with the
unsupervised ranking alone: the numbers of ``survey-classifier evaluate
active``, per half. Last, the spread: the same on ten random 80 % subsets
of the whole catalogue (seed 7), mean and range.

Run from the repository root on a database of all 1027 cutouts through the
default stages (a few minutes to build, seconds to run)::

    survey-classifier classify ../shared/data/mirabest/labels.csv \\
        --base-dir ../shared/data/mirabest/fits --db sqlite:///mb.db
    .venv/bin/python bench/active_halves.py --db sqlite:///mb.db [--per-round 10 --rounds 10]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from survey_classifier.db import make_engine
from survey_classifier.labels.simulate import simulate_from_database
from survey_classifier.query import query_results

RARE = ["fr_class=hybrid", "morphology!=standard"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=10)
    parser.add_argument("--only-choice-half", action="store_true", help="Only half A (while choosing).")
    args = parser.parse_args()
    engine = make_engine(args.db)
    table = query_results(engine, versions=None)
    catalogue = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mirabest" / "labels.csv"
    from astropy.table import Table

    rows = {name: i for i, name in enumerate(Table.read(catalogue)["file"])}
    parity = np.array([rows[Path(p).name] % 2 for p in table["path"]])
    halves = {"half A (choice)": table["cutout_id"][parity == 0], "half B (report)": table["cutout_id"][parity == 1],
              "all": table["cutout_id"]}
    print(f"{args.rounds} rounds of {args.per_round}; rare: {' or '.join(RARE)}")
    print("| pool | rare / sources | first 20: active / unsupervised | first 50 | first 100 |")
    print("|---|---|---|---|---|")
    for name, ids in halves.items():
        if args.only_choice_half and not name.startswith("half A"):
            continue
        run = simulate_from_database(engine, RARE, rounds=args.rounds, per_round=args.per_round,
                                     cutout_ids=[int(i) for i in ids])
        cells = [f"{run.found_active[n - 1]} / {run.found_unsupervised[n - 1]}" for n in (20, 50, 100)
                 if n <= len(run.found_active)]
        print(f"| {name} | {run.n_rare} / {run.n_sources} | " + " | ".join(cells) + " |")
    if args.only_choice_half:
        return
    rng = np.random.default_rng(7)
    found = []
    for _ in range(10):
        subset = np.sort(rng.choice(np.asarray(table["cutout_id"]), int(0.8 * len(table)), replace=False))
        run = simulate_from_database(engine, RARE, rounds=args.rounds, per_round=args.per_round,
                                     cutout_ids=subset.tolist())
        found.append([(run.found_active[n - 1], run.found_unsupervised[n - 1]) for n in (20, 50, 100)
                      if n <= len(run.found_active)])
    found = np.array(found)
    cells = [f"{found[:, j, 0].mean():.1f} ({found[:, j, 0].min()}-{found[:, j, 0].max()}) / "
             f"{found[:, j, 1].mean():.1f} ({found[:, j, 1].min()}-{found[:, j, 1].max()})"
             for j in range(found.shape[1])]
    print("| all, ten 80 % subsets: mean (range) | | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

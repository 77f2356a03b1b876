"""How the re-ranking method was chosen: candidates on the choice half of MiraBest only.

The development protocol of docs/anomaly.md ("Re-ranking by the users'
labels"): every candidate runs the simulated user of ``evaluate active``
(10 rounds of 10) on half A (the even rows of ``mirabest/labels.csv``) and
on five random 80 % subsets of it (seed 1), and the table gives the mean
number of rare sources (hybrid or non-standard morphology) found among the
first 20, 50 and 100 viewed, and the count at 50 in each of the six pools.
Half B and the whole catalogue play no part here; ``bench/active_halves.py``
reports the chosen method on them. Last, a bound: the shipped model of
interest fitted on every label of half A but the fold's (5-fold
cross-validation), which no user of the first 50 could beat by much.

Run from the repository root on a database of all 1027 cutouts through the
default stages (a few minutes on the 2-core machine; the trees are slow)::

    .venv/bin/python bench/active_choice.py --db sqlite:///mb.db
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from astropy.table import Table
from scipy.spatial import cKDTree

from survey_classifier.anomaly.report import rare_mask
from survey_classifier.db import make_engine
from survey_classifier.labels.features import read_features
from survey_classifier.labels.ranking import RANKING_STAGE, InterestRanker, unsupervised_scores
from survey_classifier.labels.simulate import simulate_user
from survey_classifier.query import find_variants, query_results

RARE = ["fr_class=hybrid", "morphology!=standard"]


class PseudoCount(InterestRanker):
    """Trust ``n / (n + c)`` for every source, whatever its distance to the labelled ones."""

    def __init__(self, c: float):
        super().__init__()
        self.c = c

    def trust(self, features):
        return np.full(len(features), self.n_labels_ / (self.n_labels_ + self.c) if self.model_ is not None else 0.0)


class OtherModel(InterestRanker):
    """The same blend and trust with another supervised model of interest."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def fit(self, features, interesting):
        super().fit(features, interesting)
        self.interesting_ = np.asarray(interesting, dtype=bool)
        if self.model_ is not None and self.kind == "extra trees":
            from sklearn.ensemble import ExtraTreesClassifier

            self.model_ = ExtraTreesClassifier(300, min_samples_leaf=2, class_weight="balanced", random_state=0)
            self.model_.fit(features, interesting)
        return self

    def interest(self, features):
        if self.model_ is None or self.kind == "extra trees":
            return super().interest(features)
        if self.kind == "RBF SVM":
            from sklearn.svm import SVC

            return SVC(gamma="scale", class_weight="balanced").fit(self.labelled_, self.interesting_).decision_function(
                features)
        distance, index = cKDTree(self.labelled_).query(features, k=min(7, len(self.interesting_)))
        weight = 1.0 / (distance + 1e-3)  # "7-NN vote"
        return (weight * self.interesting_[index]).sum(1) / weight.sum(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    args = parser.parse_args()
    engine = make_engine(args.db)
    with engine.connect() as connection:
        variants = find_variants(connection)
        _, ids, scores = unsupervised_scores(connection, variants, None)
        features = read_features(connection, variants, cutout_ids=ids, skip_stages=(RANKING_STAGE,))
    table = query_results(engine, cutout_ids=ids.tolist())
    by_id = {int(c): i for i, c in enumerate(table["cutout_id"])}
    order = [by_id[int(c)] for c in ids]
    rare = rare_mask(table, RARE)[order]
    catalogue = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mirabest" / "labels.csv"
    rows = {name: i for i, name in enumerate(Table.read(catalogue)["file"])}
    half_a = np.array([rows[Path(p).name] % 2 == 0 for p in table["path"][order]])
    pool_a = np.flatnonzero(half_a)
    rng = np.random.default_rng(1)
    pools = [pool_a] + [np.sort(rng.choice(pool_a, int(0.8 * len(pool_a)), replace=False)) for _ in range(5)]
    weighted = features.weighted()
    no_embedding = np.array(["embedding_" not in name for name in features.names])
    candidates = [
        ("logistic, pure (trust 1)", lambda: InterestRanker(distance_scale=np.inf), weighted),
        ("logistic, trust n/(n+10)", lambda: PseudoCount(10.0), weighted),
        ("logistic, distance trust, scale 0.5", lambda: InterestRanker(distance_scale=0.5), weighted),
        ("**logistic, distance trust, scale 1 (shipped)**", lambda: InterestRanker(), weighted),
        ("logistic, distance trust, scale 2", lambda: InterestRanker(distance_scale=2.0), weighted),
        ("logistic C 0.1, distance trust", lambda: InterestRanker(C=0.1), weighted),
        ("logistic C 1, distance trust", lambda: InterestRanker(C=1.0), weighted),
        ("logistic, distance trust, embedding left out", lambda: InterestRanker(), weighted[:, no_embedding]),
        ("logistic, distance trust, embedding unweighted", lambda: InterestRanker(), features.matrix - 0.5),
        ("extra trees, distance trust", lambda: OtherModel("extra trees"), weighted),
        ("RBF SVM, distance trust", lambda: OtherModel("RBF SVM"), weighted),
        ("7-NN vote, distance trust", lambda: OtherModel("7-NN vote"), weighted),
    ]
    unsupervised = [np.cumsum(rare[p][np.argsort(-scores[p], kind="stable")])[[19, 49, 99]] for p in pools]
    print(f"half A: {rare[pool_a].sum()} rare of {len(pool_a)}; 6 pools (half A and five 80 % subsets)")
    print("| ranking | first 20 | first 50 | first 100 | first 50, each pool |")
    print("|---|---|---|---|---|")
    mean = np.mean(unsupervised, axis=0)
    print(f"| unsupervised (anomaly score) | {mean[0]:.1f} | {mean[1]:.1f} | {mean[2]:.1f} | "
          f"{', '.join(str(u[1]) for u in unsupervised)} |")
    for name, make, matrix in candidates:
        started = time.perf_counter()
        found = [simulate_user(matrix[p], scores[p], rare[p], rounds=10, per_round=10, ranker=make()).found_active
                 for p in pools]
        mean = np.mean([f[[19, 49, 99]] for f in found], axis=0)
        print(f"| {name} | {mean[0]:.1f} | {mean[1]:.1f} | {mean[2]:.1f} | {', '.join(str(f[49]) for f in found)} |"
              f" <!-- {time.perf_counter() - started:.0f} s -->", flush=True)
    _bound(weighted[pool_a], rare[pool_a])


def _bound(features: np.ndarray, rare: np.ndarray) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    model = LogisticRegression(C=InterestRanker().C, class_weight="balanced", max_iter=5000)
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    interest = cross_val_predict(model, features, rare, cv=folds, method="predict_proba")[:, 1]
    top = np.argsort(-interest, kind="stable")
    print(f"fully supervised bound on half A (5-fold CV, all labels): AUROC {roc_auc_score(rare, interest):.3f}, "
          f"rare in the top 20/50/100: {rare[top[:20]].sum()}/{rare[top[:50]].sum()}/{rare[top[:100]].sum()}")


if __name__ == "__main__":
    main()

"""A simulated astronomer working down the anomaly list, to measure what the labels buy.

Each round the user views the ``per_round`` sources ranked highest that
they have not viewed yet and labels each interesting when the stored
catalogue calls it rare (the ``--rare`` rules of ``evaluate anomaly``),
not interesting otherwise; the ranking is then refitted to all labels so
far (:class:`~survey_classifier.labels.ranking.InterestRanker`, the model
``labels rerank`` stores). The first round sees the unsupervised ranking.
Nothing is written to the database.

The comparison is the unsupervised ranking read from the top: after ``n``
sources viewed, how many rare sources each way has shown.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.table import Table
from sqlalchemy.engine import Engine

from survey_classifier.columns import Column, annotate
from survey_classifier.errors import SurveyClassifierError
from survey_classifier.labels.ranking import RANKING_STAGE, InterestRanker, unsupervised_scores

__all__ = ["ActiveRun", "simulate_user", "simulate_from_database"]

_CURVE = (
    Column("viewed", "Sources the simulated user has viewed so far", unit="", ucd="meta.number"),
    Column("found_active", "Rare sources among them, the list re-ranked by the labels after each round", unit="",
           ucd="meta.number"),
    Column("found_unsupervised", "Rare sources among as many read from the top of the unsupervised ranking",
           unit="", ucd="meta.number"),
)


@dataclass
class ActiveRun:
    """Cumulative rare sources found after each source viewed, with and without the labels."""

    found_active: np.ndarray
    found_unsupervised: np.ndarray
    viewed_active: np.ndarray
    n_rare: int
    n_sources: int

    def table(self) -> Table:
        """Rows ``viewed, found_active, found_unsupervised`` for 1, 2, ... sources viewed."""
        viewed = np.arange(1, len(self.found_active) + 1)
        table = Table([viewed, self.found_active, self.found_unsupervised], names=[c.name for c in _CURVE])
        for spec in _CURVE:
            annotate(table[spec.name], spec.checked())
        return table

    def at(self, counts=(20, 50, 100)) -> Table:
        """The same at the given numbers viewed (those reached), and at the end."""
        reached = sorted({n for n in counts if n <= len(self.found_active)} | {len(self.found_active)})
        full = self.table()
        return full[[n - 1 for n in reached]]


def simulate_user(
    features: np.ndarray,
    unsupervised: np.ndarray,
    rare: np.ndarray,
    *,
    rounds: int,
    per_round: int,
    ranker: InterestRanker | None = None,
) -> ActiveRun:
    """Simulate ``rounds`` rounds of ``per_round`` labels; see the module docstring.

    Parameters
    ----------
    features : ndarray (n_sources, n_features)
        Weighted features (:meth:`survey_classifier.labels.features.Features.weighted`).
    unsupervised : ndarray (n_sources,)
        The unsupervised anomaly score (higher: more anomalous).
    rare : ndarray of bool (n_sources,)
        What the simulated user calls interesting.
    """
    rare = np.asarray(rare, dtype=bool)
    unsupervised = np.asarray(unsupervised, dtype=float)
    if rounds < 1 or per_round < 1:
        msg = f"the simulation needs at least one round of at least one source, got {rounds} x {per_round}"
        raise SurveyClassifierError(msg)
    ranker = ranker or InterestRanker()
    n_view = min(rounds * per_round, len(rare))
    order = np.argsort(-unsupervised, kind="stable")
    unsupervised_found = np.cumsum(rare[order[:n_view]])
    viewed: list[int] = []
    is_viewed = np.zeros(len(rare), dtype=bool)
    while len(viewed) < n_view:
        fresh = order[~is_viewed[order]][: min(per_round, n_view - len(viewed))]
        viewed.extend(fresh.tolist())
        is_viewed[fresh] = True
        if len(viewed) >= n_view:
            break
        labelled = np.array(viewed)
        ranker.fit(features[labelled], rare[labelled])
        order = np.argsort(-ranker.score(features, unsupervised)["score"], kind="stable")
    viewed_array = np.array(viewed, dtype=np.int64)
    return ActiveRun(
        found_active=np.cumsum(rare[viewed_array]),
        found_unsupervised=unsupervised_found,
        viewed_active=viewed_array,
        n_rare=int(rare.sum()),
        n_sources=len(rare),
    )


def simulate_from_database(
    engine: Engine,
    rules: list[str],
    *,
    rounds: int,
    per_round: int,
    anomaly_stage: str | None = None,
    cutout_ids=None,
    ranker: InterestRanker | None = None,
) -> ActiveRun:
    """:func:`simulate_user` on the stored features, anomaly scores and catalogue columns.

    ``rules`` are ``COLUMN=VALUE`` / ``COLUMN!=VALUE`` marking the rare
    sources (any rule matches); ``cutout_ids`` restricts the sources the
    user sees (default: every source with an anomaly score).
    """
    from survey_classifier.anomaly.report import rare_mask
    from survey_classifier.labels.features import read_features
    from survey_classifier.query import find_variants, query_results

    with engine.connect() as connection:
        variants = find_variants(connection)
        stage, ids, scores = unsupervised_scores(connection, variants, anomaly_stage)
        if cutout_ids is not None:
            keep = np.isin(ids, np.asarray(list(cutout_ids), dtype=np.int64))
            ids, scores = ids[keep], scores[keep]
        if len(ids) == 0:
            msg = f"no anomaly scores of stage {stage!r} for the sources asked for"
            raise SurveyClassifierError(msg)
        features = read_features(connection, variants, cutout_ids=ids, skip_stages=(RANKING_STAGE,))
    catalogue = query_results(engine, cutout_ids=ids.tolist())
    by_id = {int(c): i for i, c in enumerate(catalogue["cutout_id"])}
    rare = rare_mask(catalogue, list(rules))[[by_id[int(c)] for c in ids]]
    if not rare.any():
        msg = f"no source matches the rare-source rules {list(rules)}; nothing to find"
        raise SurveyClassifierError(msg)
    return simulate_user(features.weighted(), scores, rare, rounds=rounds, per_round=per_round, ranker=ranker)

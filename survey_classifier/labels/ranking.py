"""The anomaly list re-ranked by the users' interesting / not interesting labels (active learning).

An unsupervised anomaly score finds the odd; only the astronomer knows
which odd is interesting (a sidelobe stripe is odd and dull). As in
Astronomaly's "protege" (Lochner & Bassett 2021), the labels given while
looking down the list train a supervised model of interest on the stored
features of every source, and the list is re-ranked by a blend of the two
scores that trusts the supervised model where it has seen labelled
sources and the unsupervised score elsewhere, refitted after each round of
labelling:

``score = (1 - trust) * unsupervised + trust * interest``

- ``unsupervised``: the percentile of the source's unsupervised anomaly
  score (the ``anomaly`` stage's) among the ranked sources (0-1);
- ``interest``: the percentile of the probability of "interesting" given
  by an L2-regularised logistic regression (classes balanced, ``C``) on the
  weighted features of :mod:`survey_classifier.labels.features`, fitted on
  the current labels (while every label says the same, 1 or 0 for all);
- ``trust = exp(-d / (distance_scale * mean d))``, ``d`` the distance from
  the source to the nearest labelled source in that feature space: 1 on a
  labelled source, falling to about a third at the mean distance.

The method and its defaults were chosen on half of MiraBest and reported on
the other half (docs/anomaly.md). A fit is stored as a
:class:`~survey_classifier.db.models.LabelRankingRow` (method, blend,
features, labels used) and its scores as ``anomaly_scores`` rows of stage
``reranked`` whose ``model_ref`` is ``label-ranking:ID``: the re-ranked list
is read like any anomaly list (``query``, ``/anomalies?stage=reranked``),
with ``unsupervised``, ``interest``, ``interest_pct`` and ``trust`` as its
components. Each fit replaces the previous fit's scores; the fit records
stay.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
from scipy.stats import rankdata
from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection, Engine

from survey_classifier.db.models import AnomalyScoreRow, LabelRankingRow, SourceLabelRow
from survey_classifier.db.store import store_results
from survey_classifier.errors import LabelError, NotFittedError
from survey_classifier.labels.features import read_features
from survey_classifier.labels.store import current_source_labels

__all__ = [
    "RANKING_STAGE",
    "RANKING_VERSION",
    "METHOD",
    "InterestRanker",
    "interest_labels",
    "rerank",
    "unsupervised_scores",
]

#: Stage name of the re-ranked anomaly scores.
RANKING_STAGE = "reranked"
#: Version of the re-ranking method (its ``stage_version``).
RANKING_VERSION = "1"
METHOD = "logistic-blend"


def _percentiles(values: np.ndarray) -> np.ndarray:
    return (rankdata(values) - 0.5) / len(values)


class InterestRanker:
    """Blend an unsupervised anomaly ranking with a model of what users found interesting.

    Parameters
    ----------
    C : float
        Inverse L2 regularisation strength of the logistic regression.
    distance_scale : float
        Distance (in units of the mean distance to the nearest labelled
        source) over which the trust in the supervised model falls by e.
    """

    def __init__(self, *, C: float = 0.3, distance_scale: float = 1.0):
        self.C = C
        self.distance_scale = distance_scale

    def get_params(self) -> dict:
        return {"C": self.C, "distance_scale": self.distance_scale}

    def fit(self, features: np.ndarray, interesting: np.ndarray) -> InterestRanker:
        """Fit on the labelled sources' (weighted) features and their interesting (True) / not (False) labels."""
        from sklearn.linear_model import LogisticRegression

        interesting = np.asarray(interesting, dtype=bool)
        features = np.asarray(features, dtype=float)
        if len(interesting) != len(features) or len(features) == 0:
            msg = f"need one label per feature row, and a label; got {len(features)} rows, {len(interesting)} labels"
            raise ValueError(msg)
        self.n_labels_ = len(interesting)
        self.n_interesting_ = int(interesting.sum())
        self.labelled_ = features
        self.model_ = None
        if 0 < self.n_interesting_ < self.n_labels_:
            self.model_ = LogisticRegression(C=self.C, class_weight="balanced", max_iter=5000)
            self.model_.fit(features, interesting)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            msg = "this InterestRanker is not fitted yet; call fit first"
            raise NotFittedError(msg)

    def interest(self, features: np.ndarray) -> np.ndarray:
        """Probability that each source is interesting (1 or 0 for all while every label agrees)."""
        self._check_fitted()
        if self.model_ is None:
            return np.full(len(features), 1.0 if self.n_interesting_ else 0.0)
        return self.model_.predict_proba(np.asarray(features, dtype=float))[:, 1]

    def trust(self, features: np.ndarray) -> np.ndarray:
        """Trust in the supervised model for each source, from its distance to the nearest labelled source."""
        from scipy.spatial import cKDTree

        self._check_fitted()
        distance = cKDTree(self.labelled_).query(np.asarray(features, dtype=float))[0]
        mean = distance.mean()
        if not mean > 0:
            return np.ones(len(distance))
        return np.exp(-distance / (self.distance_scale * mean))

    def score(self, features: np.ndarray, unsupervised: np.ndarray) -> dict[str, np.ndarray]:
        """``score`` (the blend) and its parts for each source (``unsupervised``, ``interest``, ``interest_pct``,
        ``trust``)."""
        interest = self.interest(features)
        interest_pct = _percentiles(interest) if self.model_ is not None else interest
        unsupervised_pct = _percentiles(np.asarray(unsupervised, dtype=float))
        trust = self.trust(features)
        blended = (1.0 - trust) * unsupervised_pct + trust * interest_pct
        return {"score": blended, "unsupervised": unsupervised_pct, "interest": interest,
                "interest_pct": interest_pct, "trust": trust}

    def coefficients(self, names) -> dict[str, float]:
        """The logistic regression's coefficient of each feature (largest magnitude first)."""
        self._check_fitted()
        if self.model_ is None:
            return {}
        pairs = sorted(zip(names, self.model_.coef_[0].tolist()), key=lambda pair: -abs(pair[1]))
        return {name: float(value) for name, value in pairs}


def interest_labels(connection: Connection) -> dict[int, tuple[bool, int]]:
    """``{cutout_id: (interesting, label id)}`` of the sources whose current label says either way."""
    return {
        cutout_id: (row["interesting"], row["id"])
        for cutout_id, row in current_source_labels(connection).items()
        if row["interesting"] is not None
    }


def unsupervised_scores(connection: Connection, variants: Mapping, stage: str | None) -> tuple:
    """``(stage, cutout_ids, scores)`` of the unsupervised anomaly stage (not a re-ranking)."""
    from survey_classifier.query import stage_of_kind

    candidates = {name: v for name, v in variants.items() if name != RANKING_STAGE}
    stage = stage_of_kind(candidates, "anomaly", stage, "re-ranking")
    variant = candidates[stage]
    t = variant.row_class.__table__
    rows = connection.execute(
        select(t.c.cutout_id, t.c.score)
        .where(t.c.stage == stage, t.c.stage_version == variant.version, t.c.model_ref == variant.model,
               t.c.score.is_not(None))
        .order_by(t.c.cutout_id)
    ).all()
    ids = np.array([r.cutout_id for r in rows], dtype=np.int64)
    return stage, ids, np.array([r.score for r in rows], dtype=float)


def rerank(
    engine: Engine,
    *,
    anomaly_stage: str | None = None,
    versions: Mapping[str, str] | None = None,
    author: str | None = None,
    ranker: InterestRanker | None = None,
) -> dict:
    """Fit the ranking to the current interesting / not interesting labels and store its scores.

    Parameters
    ----------
    anomaly_stage : str, optional
        The unsupervised anomaly stage (default: the one of the database).
    versions : mapping, optional
        ``{stage: "VERSION[@MODEL]"}`` of the results to read (default: the newest).
    author : str, optional
        Who asked for the fit (recorded).
    ranker : InterestRanker, optional
        The method with its parameters (default: the documented defaults).

    Returns
    -------
    dict
        The stored fit: ``id``, ``model_ref``, ``method``, ``blend``,
        ``features``, ``n_labels``, ``n_interesting``, ``metrics`` ...
    """
    from survey_classifier.query import find_variants

    ranker = ranker or InterestRanker()
    started = time.perf_counter()
    with engine.connect() as connection:
        variants = find_variants(connection, versions)
        stage, ids, scores = unsupervised_scores(connection, variants, anomaly_stage)
        labels = interest_labels(connection)
        features = read_features(
            connection, variants, cutout_ids=ids, skip_stages=(RANKING_STAGE,)
        )
    index = {int(cutout_id): i for i, cutout_id in enumerate(ids)}
    labelled = [(index[c], value, label_id) for c, (value, label_id) in labels.items() if c in index]
    if not labelled:
        msg = (
            f"no source with an anomaly score of stage {stage!r} is labelled interesting or not interesting yet "
            f"({len(labels)} labelled sources without such a score); label some first"
        )
        raise LabelError(msg)
    rows = np.array([i for i, _, _ in labelled])
    interesting = np.array([value for _, value, _ in labelled], dtype=bool)
    weighted = features.weighted()
    ranker.fit(weighted[rows], interesting)
    parts = ranker.score(weighted, scores)
    fit_seconds = time.perf_counter() - started
    variant = variants[stage]
    record = {
        "stage": RANKING_STAGE,
        "method": f"{METHOD}/{RANKING_VERSION}",
        "model_ref": "",
        "unsupervised": {"stage": stage, "version": variant.version, "model_ref": variant.model},
        "features": {"variants": features.variants, "names": features.names},
        "blend": {"rule": "(1 - trust) * unsupervised + trust * interest_pct",
                  "trust": "exp(-d / (distance_scale * mean d)), d: distance to the nearest labelled source",
                  "mean_trust": round(float(parts["trust"].mean()), 4), **ranker.get_params()},
        "n_labels": ranker.n_labels_,
        "n_interesting": ranker.n_interesting_,
        "last_label_id": max(label_id for _, _, label_id in labelled),
        "metrics": {"fit_seconds": round(fit_seconds, 3), "n_sources": len(ids),
                    "coefficients": ranker.coefficients(features.names)},
        "author": author,
    }
    with engine.begin() as connection:
        fit_id = connection.execute(
            insert(LabelRankingRow).values(**record).returning(LabelRankingRow.id)
        ).scalar_one()
        record.update(id=fit_id, model_ref=f"label-ranking:{fit_id}")
        connection.execute(update(LabelRankingRow).where(LabelRankingRow.id == fit_id)
                           .values(model_ref=record["model_ref"]))
        _store_scores(connection, record["model_ref"], ids, parts)
    return record


def _store_scores(connection: Connection, model_ref: str, ids: np.ndarray, parts: dict) -> None:
    t = AnomalyScoreRow.__table__
    connection.execute(delete(t).where(t.c.stage == RANKING_STAGE, t.c.model_ref != model_ref))
    score = parts["score"]
    order = np.argsort(-score, kind="stable")
    ranks = np.empty(len(score), dtype=np.int64)
    ranks[order] = np.arange(1, len(score) + 1)
    percentile = 100.0 * np.searchsorted(np.sort(score), score, side="right") / len(score)
    names = ("unsupervised", "interest", "interest_pct", "trust")
    results = [
        (cutout_id, {"score": float(score[i]), "components": {name: float(parts[name][i]) for name in names},
                     "partial": False, "rank": int(ranks[i]), "percentile": float(percentile[i])})
        for i, cutout_id in enumerate(ids.tolist())
    ]
    store_results(connection, kind="anomaly", stage=RANKING_STAGE, stage_version=RANKING_VERSION,
                  model_ref=model_ref, run_id=None, results=results)


def ranking_fits(connection: Connection, limit: int = 20) -> list[dict]:
    """The newest fits of the re-ranking, newest first."""
    t = LabelRankingRow.__table__
    rows = connection.execute(select(t).order_by(t.c.id.desc()).limit(limit))
    return [dict(row._mapping) for row in rows]


def labels_since(connection: Connection, fit: dict) -> int:
    """How many source labels were added after a fit (a refit would use them)."""
    t = SourceLabelRow.__table__
    query = select(t.c.id).where(t.c.interesting.is_not(None))
    if fit.get("last_label_id") is not None:
        query = query.where(t.c.id > fit["last_label_id"])
    return len(connection.execute(query).all())

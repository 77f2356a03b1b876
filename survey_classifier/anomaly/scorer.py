"""The fitted anomaly scorer: reference statistics and the combined score.

Components (each stored, each optional):

``som_distance``
    Distance to the best-matching SOM neuron divided by the distance typical
    of *that* neuron in the reference catalogue (its median, shrunk towards
    the map-wide median for neurons with few hits, so sparsely populated
    nodes do not dominate), as done with PINK maps for Radio Galaxy Zoo,
    LoTSS and RACS.
``cnn_entropy``
    Entropy of the CNN class probabilities over log(number of classes):
    0 for a certain prediction, 1 for a uniform one.
``embedding_knn``
    Mean Euclidean distance to the ``k`` nearest reference embeddings
    (penultimate layer of the CNN).
``embedding_iforest``
    Isolation-forest anomaly score (``-score_samples``) in the embedding
    space, fitted on the reference embeddings with a fixed seed.
``asymmetry``
    Rotational asymmetry of the emission about the cutout centre, from the
    ``measure`` stage (version 2 on): 0 for a source symmetric about its
    catalogue position, towards 1 for one-sided emission.

The combined ``score`` is the weighted mean, over the components present,
of each component's percentile within the reference catalogue (0-1), with
the weights of :data:`DEFAULT_WEIGHTS` unless others are given. A cutout
lacking a component (its SOM mapping failed, say) is scored on the others
and flagged ``partial``; with no weighted component at all it gets no
score.

The fitted state is a plain ``.npz`` (no pickle); the isolation forest is
refitted deterministically from the stored reference embeddings on load.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from survey_classifier.errors import ModelError, NotFittedError

__all__ = ["AnomalyScorer", "COMPONENTS", "DEFAULT_WEIGHTS", "SCORER_FORMAT", "check_weights"]

COMPONENTS = ("som_distance", "cnn_entropy", "embedding_knn", "embedding_iforest", "asymmetry")
SCORER_FORMAT = "survey-classifier-anomaly-scorer/2"
#: Formats :meth:`AnomalyScorer.load` reads. Format 1 predates weights and ``asymmetry``; its
#: scorers keep the equal-weight mean they were fitted with.
_READABLE_FORMATS = ("survey-classifier-anomaly-scorer/1", SCORER_FORMAT)

#: Weights of the components in the combined score. They were chosen on one half of MiraBest
#: (alternate rows, 43 of 514 sources rare: hybrid or non-standard morphology) and checked on the
#: other half (docs/anomaly.md): asymmetry was the strongest single component there (AUROC
#: 0.72), the SOM distance, entropy and k-NN distance weaker (0.56-0.59), and the isolation
#: forest in the embedding below random (0.46), so it is stored but left out of the combination.
#: On the other half the shipped scorer reaches 0.70.
DEFAULT_WEIGHTS = {
    "som_distance": 1.0,
    "cnn_entropy": 1.0,
    "embedding_knn": 1.0,
    "embedding_iforest": 0.0,
    "asymmetry": 3.0,
}


def check_weights(weights: dict) -> dict[str, float]:
    """Every component's weight (0 where ``weights`` names none); ValueError for a bad one."""
    unknown = sorted(set(weights) - set(COMPONENTS))
    if unknown:
        msg = f"anomaly scorer weights name unknown components {unknown}; components are {list(COMPONENTS)}"
        raise ValueError(msg)
    bad = {name: w for name, w in weights.items() if not (isinstance(w, (int, float, np.number)) and w >= 0)}
    if bad:
        msg = f"anomaly scorer weights must be numbers >= 0, got {bad}"
        raise ValueError(msg)
    return {name: float(weights.get(name, 0.0)) for name in COMPONENTS}


def _asymmetry(measure) -> float | None:
    value = None if measure is None else measure.get("asymmetry")
    return None if value is None or not np.isfinite(value) else float(value)


def _entropy(probabilities: dict) -> float:
    p = np.clip(np.asarray(list(probabilities.values()), dtype=float), 1e-12, 1.0)
    p = p / p.sum()
    return float(-(p * np.log(p)).sum() / np.log(len(p))) if len(p) > 1 else 0.0


class AnomalyScorer:
    """Fit reference statistics on a catalogue's SOM and CNN results, score new ones.

    Parameters
    ----------
    som_ref, cnn_ref, measure_ref : str
        ``"stage_version@model_ref"`` of the SOM, CNN and measure results it
        is fitted on; scoring results of other versions is refused.
    som_sha256, cnn_sha256 : str
        sha256 of the SOM map and CNN model those results came from: results
        of the same stage version by a model with the same bytes are
        accepted whatever its name (empty: the refs must match).
    k : int
        Neighbours for ``embedding_knn``.
    shrinkage : float
        Pseudo-count pulling a node's typical distance towards the map-wide
        median (a node with ``shrinkage`` hits is weighted half and half).
    n_estimators : int
        Trees of the isolation forest.
    seed : int
    weights : dict or None
        Weight of each component in the combined score (missing names
        weigh 0); None uses :data:`DEFAULT_WEIGHTS`.
    name, version : str
        Registry identity; ``name:version`` is the ``model_ref`` of the
        scores it makes.
    """

    def __init__(
        self, *, som_ref="", cnn_ref="", measure_ref="", som_sha256="", cnn_sha256="", k=10, shrinkage=5.0,
        n_estimators=200, seed=0, weights=None, name="anomaly-scorer", version="1",
    ):
        self.name = name
        self.version = version
        self.som_ref = som_ref
        self.cnn_ref = cnn_ref
        self.measure_ref = measure_ref
        self.som_sha256 = som_sha256
        self.cnn_sha256 = cnn_sha256
        self.k = k
        self.shrinkage = shrinkage
        self.n_estimators = n_estimators
        self.seed = seed
        self.weights = weights

    def component_weights(self) -> dict[str, float]:
        """The weight of every component in the combined score (validated)."""
        return check_weights(DEFAULT_WEIGHTS if self.weights is None else self.weights)

    # ------------------------------------------------------------------ fit
    def fit(self, som_results=(), cnn_results=(), measure_results=()):
        """Fit on reference results.

        Parameters
        ----------
        som_results : sequence of dict
            ``node_x``, ``node_y``, ``distance`` per reference cutout.
        cnn_results : sequence of dict
            ``probabilities`` and optionally ``embedding`` per reference cutout.
        measure_results : sequence of dict
            ``asymmetry`` (None where no emission was found) per reference cutout.
        """
        som_results = list(som_results)
        cnn_results = list(cnn_results)
        asymmetries = [_asymmetry(r) for r in measure_results]
        asymmetries = [a for a in asymmetries if a is not None]
        if not som_results and not cnn_results and not asymmetries:
            msg = "an anomaly scorer needs SOM, CNN or measure results of a reference catalogue to fit on"
            raise ValueError(msg)
        self.component_weights()  # refuse bad weights before fitting
        if som_results:
            nodes = np.array([(r["node_x"], r["node_y"]) for r in som_results], dtype=np.int64)
            distances = np.array([r["distance"] for r in som_results], dtype=np.float64)
            self.global_median_ = float(np.median(distances))
            shape = nodes.max(axis=0) + 1
            self.node_median_ = np.full(shape, self.global_median_)
            self.node_hits_ = np.zeros(shape, dtype=np.int64)
            for (x, y) in {tuple(n) for n in nodes}:
                selected = distances[(nodes[:, 0] == x) & (nodes[:, 1] == y)]
                self.node_hits_[x, y] = len(selected)
                self.node_median_[x, y] = float(np.median(selected))
        embeddings = [r["embedding"] for r in cnn_results if r.get("embedding") is not None]
        self.embeddings_ = np.asarray(embeddings, dtype=np.float32) if embeddings else np.zeros((0, 0), np.float32)
        if 0 < len(self.embeddings_) <= self.k:
            msg = f"need more than k={self.k} reference embeddings, got {len(self.embeddings_)}"
            raise ValueError(msg)
        self._build_models()
        reference = {name: [] for name in COMPONENTS}
        for result in som_results:
            reference["som_distance"].append(self._som_component(result))
        for result in cnn_results:
            reference["cnn_entropy"].append(_entropy(result["probabilities"]))
        reference["asymmetry"] = asymmetries
        if len(self.embeddings_):
            knn, iforest = self._embedding_components(self.embeddings_, exclude_self=True)
            reference["embedding_knn"] = list(knn)
            reference["embedding_iforest"] = list(iforest)
        self.reference_ = {name: np.sort(np.asarray(v, dtype=np.float64)) for name, v in reference.items() if v}
        return self

    def _build_models(self):
        self._knn = self._forest = None
        if len(self.embeddings_):
            from sklearn.ensemble import IsolationForest
            from sklearn.neighbors import NearestNeighbors

            self._knn = NearestNeighbors(n_neighbors=self.k + 1).fit(self.embeddings_)
            self._forest = IsolationForest(n_estimators=self.n_estimators, random_state=self.seed).fit(self.embeddings_)

    def _check_fitted(self):
        if not hasattr(self, "reference_"):
            msg = "this AnomalyScorer is not fitted yet: call fit() or AnomalyScorer.load()"
            raise NotFittedError(msg)

    def _som_component(self, result) -> float:
        x, y = int(result["node_x"]), int(result["node_y"])
        inside = hasattr(self, "node_median_") and x < self.node_median_.shape[0] and y < self.node_median_.shape[1]
        hits = self.node_hits_[x, y] if inside else 0
        node = self.node_median_[x, y] if inside else self.global_median_
        typical = (hits * node + self.shrinkage * self.global_median_) / (hits + self.shrinkage)
        return float(result["distance"]) / max(typical, 1e-12)

    def _embedding_components(self, embeddings, *, exclude_self=False):
        distances, _ = self._knn.kneighbors(embeddings, n_neighbors=self.k + 1)
        distances = distances[:, 1:] if exclude_self else distances[:, : self.k]
        return distances.mean(axis=1), -self._forest.score_samples(embeddings)

    # ---------------------------------------------------------------- score
    def score(self, som_results, cnn_results, measure_results=None):
        """Score cutouts; ``som_results``, ``cnn_results`` and ``measure_results`` hold a dict or None each.

        Returns a list of ``{"score", "components", "percentiles", "partial", "missing"}``.
        """
        self._check_fitted()
        weights = self.component_weights()
        n = len(som_results)
        measure_results = [None] * n if measure_results is None else measure_results
        if not len(cnn_results) == len(measure_results) == n:
            msg = f"got {n} SOM results but {len(cnn_results)} CNN and {len(measure_results)} measure results"
            raise ValueError(msg)
        components = [dict() for _ in range(n)]
        for i, (som, cnn, measure) in enumerate(zip(som_results, cnn_results, measure_results)):
            if som is not None and "som_distance" in self.reference_:
                components[i]["som_distance"] = self._som_component(som)
            if cnn is not None and "cnn_entropy" in self.reference_:
                components[i]["cnn_entropy"] = _entropy(cnn["probabilities"])
            asymmetry = _asymmetry(measure)
            if asymmetry is not None and "asymmetry" in self.reference_:
                components[i]["asymmetry"] = asymmetry
        with_embedding = [
            i for i, cnn in enumerate(cnn_results) if cnn is not None and cnn.get("embedding") is not None
        ]
        if with_embedding and self._knn is not None:
            embeddings = np.asarray([cnn_results[i]["embedding"] for i in with_embedding], dtype=np.float32)
            if embeddings.shape[1] != self.embeddings_.shape[1]:
                msg = (
                    f"embeddings of length {embeddings.shape[1]} do not match the scorer's "
                    f"{self.embeddings_.shape[1]}; was it fitted on another CNN?"
                )
                raise ModelError(msg)
            knn, iforest = self._embedding_components(embeddings)
            for j, i in enumerate(with_embedding):
                components[i]["embedding_knn"] = float(knn[j])
                components[i]["embedding_iforest"] = float(iforest[j])
        expected = set(self.reference_)
        out = []
        for parts in components:
            percentiles = {
                name: float(np.searchsorted(self.reference_[name], value, side="right") / len(self.reference_[name]))
                for name, value in parts.items()
            }
            total = sum(weights[name] for name in percentiles)
            score = sum(weights[name] * p for name, p in percentiles.items()) / total if total > 0 else None
            out.append(
                {
                    "score": score,
                    "components": parts,
                    "percentiles": percentiles,
                    "partial": set(parts) != expected,
                    "missing": sorted(expected - set(parts)),
                }
            )
        return out

    # ------------------------------------------------------------ save/load
    def save(self, path) -> Path:
        """Write the fitted scorer to ``path`` (``.npz``, no pickle)."""
        self._check_fitted()
        path = Path(path)
        meta = {
            "format": SCORER_FORMAT,
            "params": {
                "name": self.name,
                "version": self.version,
                "som_ref": self.som_ref,
                "cnn_ref": self.cnn_ref,
                "measure_ref": self.measure_ref,
                "som_sha256": self.som_sha256,
                "cnn_sha256": self.cnn_sha256,
                "k": self.k,
                "shrinkage": self.shrinkage,
                "n_estimators": self.n_estimators,
                "seed": self.seed,
                "weights": self.component_weights(),
            },
            "components": sorted(self.reference_),
            "global_median": getattr(self, "global_median_", None),
        }
        arrays = {f"reference_{name}": values for name, values in self.reference_.items()}
        if hasattr(self, "node_median_"):
            arrays["node_median"] = self.node_median_
            arrays["node_hits"] = self.node_hits_
        with open(path, "wb") as handle:
            np.savez(handle, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                     embeddings=self.embeddings_, **arrays)
        return path

    @staticmethod
    def read_meta(path) -> dict:
        """The JSON metadata of a saved scorer (identity, versions fitted on)."""
        return _read(path, arrays=False)[0]

    @classmethod
    def load(cls, path) -> AnomalyScorer:
        """Read a scorer written by :meth:`save`."""
        meta, arrays = _read(path, arrays=True)
        params = dict(meta["params"])
        if meta["format"] != SCORER_FORMAT:  # format 1: an equal-weight mean of what it holds
            params["weights"] = dict.fromkeys(meta["components"], 1.0)
        scorer = cls(**params)
        scorer.embeddings_ = arrays["embeddings"]
        scorer.reference_ = {name: arrays[f"reference_{name}"] for name in meta["components"]}
        if "node_median" in arrays:
            scorer.node_median_ = arrays["node_median"]
            scorer.node_hits_ = arrays["node_hits"]
            scorer.global_median_ = meta["global_median"]
        scorer._build_models()
        return scorer


def _read(path, *, arrays: bool):
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(archive["meta"].tobytes().decode())
            content = {name: archive[name] for name in archive.files} if arrays else {}
    except (OSError, ValueError, KeyError) as exc:
        msg = f"{path}: not an anomaly scorer file ({exc})"
        raise ModelError(msg) from exc
    if meta.get("format") not in _READABLE_FORMATS:
        msg = f"{path}: scorer format {meta.get('format')!r} is not one of {list(_READABLE_FORMATS)}"
        raise ModelError(msg)
    return meta, content

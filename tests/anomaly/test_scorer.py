"""The anomaly scorer: components, normalisation, partial scores, persistence."""

import json

import numpy as np
import pytest

from survey_classifier.anomaly.scorer import DEFAULT_WEIGHTS, AnomalyScorer
from survey_classifier.errors import ModelError, NotFittedError


def _asymmetries(rng, n=300):
    """Measure results: most sources nearly symmetric about their centre."""
    return [{"asymmetry": float(v)} for v in rng.beta(2, 5, n)]


def _reference(rng, n=300):
    """Two populated SOM nodes with different typical distances, 8-d embeddings in two clusters."""
    som, cnn = [], []
    for i in range(n):
        busy = i % 2
        som.append({"node_x": busy, "node_y": 0, "distance": float(rng.normal(10.0 if busy else 2.0, 0.3))})
        p = float(rng.uniform(0.9, 1.0))
        centre = np.zeros(8)
        centre[busy] = 5.0
        embedding = (centre + rng.normal(0, 0.5, 8)).astype("f4")
        cnn.append({"probabilities": {"FRI": p, "FRII": 1 - p}, "embedding": embedding})
    return som, cnn


def test_each_component_finds_its_own_outlier():
    rng = np.random.default_rng(1)
    som, cnn = _reference(rng)
    scorer = AnomalyScorer(k=5).fit(som, cnn)
    typical_som = {"node_x": 1, "node_y": 0, "distance": 10.0}
    typical_cnn = {"probabilities": {"FRI": 0.97, "FRII": 0.03}, "embedding": np.r_[0.0, 5.0, np.zeros(6)].astype("f4")}
    odd_som = {"node_x": 0, "node_y": 0, "distance": 6.0}  # small in absolute terms, 3x what node (0,0) holds
    odd_cnn = {"probabilities": {"FRI": 0.5, "FRII": 0.5}, "embedding": np.full(8, 3.0, dtype="f4")}
    results = scorer.score([typical_som, odd_som, typical_som], [typical_cnn, typical_cnn, odd_cnn])
    assert results[1]["components"]["som_distance"] > 2.5 > results[0]["components"]["som_distance"]
    assert results[2]["components"]["cnn_entropy"] == pytest.approx(1.0)
    assert results[2]["components"]["embedding_knn"] > 5 * results[0]["components"]["embedding_knn"]
    assert results[0]["score"] < min(results[1]["score"], results[2]["score"])
    assert not any(r["partial"] for r in results)


def test_sparse_node_does_not_dominate():
    """A node hit once, at a large distance, is judged mostly against the map-wide median."""
    rng = np.random.default_rng(2)
    som, cnn = _reference(rng)
    som.append({"node_x": 2, "node_y": 0, "distance": 40.0})
    scorer = AnomalyScorer(shrinkage=5.0).fit(som, [])
    lonely = scorer.score([{"node_x": 2, "node_y": 0, "distance": 40.0}], [None])[0]
    unshrunk = AnomalyScorer(shrinkage=1e-9).fit(som, [])
    scored = unshrunk.score([{"node_x": 2, "node_y": 0, "distance": 40.0}], [None])[0]
    assert scored["components"]["som_distance"] == pytest.approx(1.0)
    assert lonely["components"]["som_distance"] > 2.0


def test_missing_upstream_gives_a_flagged_partial_score_not_zero():
    rng = np.random.default_rng(3)
    som, cnn = _reference(rng)
    scorer = AnomalyScorer(k=5).fit(som, cnn)
    full, no_som, nothing = scorer.score([som[0], None, None], [cnn[0], cnn[0], None])
    assert not full["partial"]
    assert no_som["partial"] and no_som["missing"] == ["som_distance"] and no_som["score"] is not None
    assert nothing["score"] is None and nothing["partial"]


def test_save_load_scores_identically(tmp_path):
    rng = np.random.default_rng(4)
    som, cnn = _reference(rng)
    scorer = AnomalyScorer(som_ref="1@som-mirabest:abc", cnn_ref="1@fr-cnn:1", k=5).fit(som, cnn)
    path = scorer.save(tmp_path / "scorer.npz")
    again = AnomalyScorer.load(path)
    assert (again.som_ref, again.cnn_ref) == ("1@som-mirabest:abc", "1@fr-cnn:1")
    a = scorer.score(som[:20], cnn[:20])
    b = again.score(som[:20], cnn[:20])
    assert [r["score"] for r in a] == pytest.approx([r["score"] for r in b])


def test_bad_files_and_unfitted_use_are_refused(tmp_path):
    with pytest.raises(NotFittedError, match="not fitted"):
        AnomalyScorer().score([None], [None])
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a numpy archive")
    with pytest.raises(ModelError, match="not an anomaly scorer file"):
        AnomalyScorer.load(bad)
    rng = np.random.default_rng(5)
    som, cnn = _reference(rng)
    scorer = AnomalyScorer(k=5).fit(som, cnn)
    with pytest.raises(ModelError, match="do not match the scorer's 8"):
        scorer.score([None], [{"probabilities": {"a": 1.0}, "embedding": np.zeros(4, "f4")}])


def test_weights_set_each_component_share_of_the_combined_score():
    rng = np.random.default_rng(6)
    som, cnn = _reference(rng)
    measure = _asymmetries(rng)
    typical_som = {"node_x": 1, "node_y": 0, "distance": 10.0}
    odd_som = {"node_x": 0, "node_y": 0, "distance": 6.0}
    symmetric, one_sided = {"asymmetry": 0.05}, {"asymmetry": 0.95}
    pair = dict(
        som_results=[odd_som, typical_som], cnn_results=[cnn[0], cnn[0]], measure_results=[symmetric, one_sided]
    )

    default = AnomalyScorer(k=5).fit(som, cnn, measure)
    assert default.component_weights() == DEFAULT_WEIGHTS
    odd_node, asymmetric = default.score(**pair)
    assert asymmetric["components"]["asymmetry"] == 0.95 and asymmetric["percentiles"]["asymmetry"] > 0.99
    assert asymmetric["score"] > odd_node["score"]  # asymmetry weighs 3, the SOM distance 1
    weights = default.component_weights()
    percentiles = asymmetric["percentiles"]
    expected = sum(weights[k] * p for k, p in percentiles.items()) / sum(weights[k] for k in percentiles)
    assert asymmetric["score"] == pytest.approx(expected)
    assert "embedding_iforest" in asymmetric["components"]  # stored, weight 0

    som_first = AnomalyScorer(k=5, weights={"som_distance": 5.0, "asymmetry": 1.0}).fit(som, cnn, measure)
    odd_node, asymmetric = som_first.score(**pair)
    assert odd_node["score"] > asymmetric["score"]
    only_som = odd_node["percentiles"]["som_distance"] * 5 + odd_node["percentiles"]["asymmetry"]
    assert odd_node["score"] == pytest.approx(only_som / 6)


def test_missing_measure_and_bad_weights():
    rng = np.random.default_rng(7)
    som, cnn = _reference(rng)
    scorer = AnomalyScorer(k=5).fit(som, cnn, _asymmetries(rng))
    no_emission = scorer.score([som[0]], [cnn[0]], [{"asymmetry": None}])[0]
    assert no_emission["partial"] and no_emission["missing"] == ["asymmetry"] and no_emission["score"] is not None
    with pytest.raises(ValueError, match=r"unknown components \['asymetry'\]"):
        AnomalyScorer(weights={"asymetry": 1.0}).fit(som, cnn)
    with pytest.raises(ValueError, match="numbers >= 0"):
        AnomalyScorer(weights={"asymmetry": -1.0}).fit(som, cnn)
    nothing_weighted = AnomalyScorer(k=5, weights={"asymmetry": 1.0}).fit(som, cnn)
    result = nothing_weighted.score([som[0]], [cnn[0]])[0]
    assert result["score"] is None and result["components"]


def test_format_1_scorers_keep_their_equal_weight_mean(tmp_path):
    """A scorer saved before weights and asymmetry existed scores as it did: the plain mean."""
    rng = np.random.default_rng(8)
    som, cnn = _reference(rng)
    path = AnomalyScorer(k=5, som_ref="1@som:x", cnn_ref="1@fr-cnn:1").fit(som, cnn).save(tmp_path / "new.npz")
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(arrays.pop("meta").tobytes())
    meta["format"] = "survey-classifier-anomaly-scorer/1"
    for key in ("weights", "measure_ref"):
        del meta["params"][key]
    old = tmp_path / "old.npz"
    np.savez(old, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)

    scorer = AnomalyScorer.load(old)
    result = scorer.score(som[:5], cnn[:5])
    for r in result:
        assert r["score"] == pytest.approx(np.mean(list(r["percentiles"].values())))
    assert set(r["percentiles"]) == {"som_distance", "cnn_entropy", "embedding_knn", "embedding_iforest"}

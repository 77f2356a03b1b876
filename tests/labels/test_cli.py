"""``survey-classifier labels ...`` on a real results database."""

from __future__ import annotations

from survey_classifier.anomaly.report import rare_mask
from survey_classifier.query import query_results, top_anomalies


def test_label_by_hand_list_and_rerank(cli, db_url, db_engine):
    added = cli("labels", "add", 7, "--class", "WAT", "--interesting", "--note", "bent both ways", "--author", "ann",
                "--db", db_url)
    assert added.exit_code == 0 and "label 1 stored for cutout 7" in added.output
    refused = cli("labels", "add", 7, "--author", "ann", "--db", db_url)
    assert refused.exit_code == 1 and "Error: the label of cutout 7 says nothing" in refused.output
    missing = cli("labels", "add", 99999, "--class", "FRI", "--db", db_url)
    assert missing.exit_code == 1 and "no cutout with id 99999" in missing.output

    neuron = cli("labels", "neuron", 4, 2, "--class", "FRII", "--author", "bob", "--db", db_url)
    assert neuron.exit_code == 0 and "neuron (4, 2) of som-mirabest:3" in neuron.output
    outside = cli("labels", "neuron", 4, 20, "--class", "FRII", "--db", db_url)
    assert outside.exit_code == 1 and "outside the SOM map" in outside.output
    listed = cli("labels", "list", "--db", db_url)
    assert "bent both ways" in listed.output and "1 labels" in listed.output
    assert "FRII" in cli("labels", "list", "--neurons", "--db", db_url).output

    no_interest = cli("labels", "rerank", "--db", db_url)  # one interesting label: a fit of one kind
    assert no_interest.exit_code == 0, no_interest.output
    top = top_anomalies(db_engine, 15, stage="anomaly")
    for cutout_id, rare in zip(top["cutout_id"], rare_mask(top, ["fr_class=hybrid", "morphology!=standard"])):
        flag = "--interesting" if rare else "--not-interesting"
        assert cli("labels", "add", int(cutout_id), flag, "--author", "sim", "--db", db_url).exit_code == 0
    reranked = cli("labels", "rerank", "--db", db_url, "--top", 5)
    assert reranked.exit_code == 0, reranked.output
    assert "label-ranking:2: 16 labels" in reranked.output and "strongest features:" in reranked.output
    assert "reranked_interest" in reranked.output
    shown = cli("query", "--db", db_url, "--top-anomalies", 3, "--anomaly-stage", "reranked")
    assert shown.exit_code == 0 and "3 rows" in shown.output
    interesting = query_results(db_engine, interesting=True)
    assert 7 in interesting["cutout_id"] and len(interesting) >= 2
    only = cli("query", "--db", db_url, "--interesting", "--label-class", "wat")
    assert "1 rows" in only.output

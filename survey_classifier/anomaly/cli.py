"""``survey-classifier train anomaly`` and ``survey-classifier evaluate anomaly``."""

from __future__ import annotations

import click

from survey_classifier.cli.group import fail
from survey_classifier.cli.options import db_option
from survey_classifier.errors import SurveyClassifierError

__all__ = ["train_anomaly", "evaluate_anomaly"]


@click.command("anomaly")
@db_option
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Scorer file to write (.npz).")
@click.option("--run", "run_id", type=int, default=None, help="Fit on this run's results only.")
@click.option("--som-stage", default="som", show_default=True)
@click.option("--cnn-stage", default="cnn", show_default=True)
@click.option("--measure-stage", default="measure", show_default=True)
@click.option("-k", "--neighbours", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--weight", "weights", multiple=True, metavar="COMPONENT=W",
              help="Weight of a component in the combined score (repeatable; the others keep their "
                   "defaults, see docs/anomaly.md); 0 stores a component without combining it.")
@click.option("--seed", default=0, show_default=True)
@click.option("--name", default="anomaly-scorer", show_default=True, help="Registry name of the scorer.")
@click.option("--model-version", default="1", show_default=True, help="Registry version of the scorer.")
@click.option("--register/--no-register", default=True, show_default=True,
              help="Record the scorer in the model registry of this database.")
def train_anomaly(db_url, output, run_id, som_stage, cnn_stage, measure_stage, neighbours, weights, seed, name,
                  model_version, register):
    """Fit the anomaly scorer on a catalogue already run through measure, som and cnn."""
    from survey_classifier.anomaly.fit import fit_from_database
    from survey_classifier.anomaly.scorer import DEFAULT_WEIGHTS
    from survey_classifier.db.checks import open_database

    engine = open_database(db_url)
    chosen = dict(DEFAULT_WEIGHTS, **_parse_weights(weights))
    try:
        scorer, path = fit_from_database(
            engine, output, run_id=run_id, som_stage=som_stage, cnn_stage=cnn_stage, measure_stage=measure_stage,
            k=neighbours, seed=seed, weights=chosen, name=name, version=model_version,
        )
    except ValueError as exc:
        fail(str(exc))
    fitted_weights = scorer.component_weights()
    sizes = ", ".join(
        f"{k} ({len(v)} reference values, weight {fitted_weights[k]:g})" for k, v in scorer.reference_.items()
    )
    click.echo(
        f"wrote {path}: fitted on measure {scorer.measure_ref or '-'}, som {scorer.som_ref or '-'} "
        f"and cnn {scorer.cnn_ref or '-'}; components: {sizes}"
    )
    if register:
        from survey_classifier.registry import register_model

        row = register_model(
            engine, path, stage="anomaly", name=name, version=model_version,
            details={"weights": fitted_weights, "n_reference": {k: len(v) for k, v in scorer.reference_.items()}},
        )
        click.echo(f"registered {row['model_ref']} (sha256 {row['sha256'][:12]}...), stored in {row['store']}")


def _parse_weights(items) -> dict[str, float]:
    """``COMPONENT=W`` options as a dict, each checked by the scorer's own rule."""
    from survey_classifier.anomaly.scorer import check_weights

    weights = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            check_weights({name: float(value)})
        except ValueError as exc:
            msg = f"--weight {item!r}: expected COMPONENT=W ({exc})"
            raise SurveyClassifierError(msg) from exc
        weights[name] = float(value)
    return weights


@click.command("anomaly")
@db_option
@click.option("--run", "run_id", type=int, default=None, help="Evaluate this run's cutouts (default: all).")
@click.option("--rare", "rules", multiple=True, required=True,
              help="COLUMN=VALUE or COLUMN!=VALUE marking rare sources (any rule matches); repeatable.")
@click.option("--seed", default=0, show_default=True)
@click.option("-o", "--output", default=None, help="Also write the table (ECSV, CSV ...).")
def evaluate_anomaly(db_url, run_id, rules, seed, output):
    """AUROC and precision at k of each anomaly component, the combined score and baselines."""
    import numpy as np
    from sklearn.ensemble import IsolationForest

    from survey_classifier.anomaly.report import evaluate_scores, image_statistics, rare_mask
    from survey_classifier.anomaly.scorer import COMPONENTS
    from survey_classifier.db.checks import open_database
    from survey_classifier.formats import write_table
    from survey_classifier.query import query_results

    engine = open_database(db_url)
    table = query_results(engine, run_id=run_id)
    if "anomaly_score" not in table.colnames:
        fail("no anomaly scores in this database; run classify with the anomaly stage first")
    rare = rare_mask(table, list(rules))
    scores = {
        name: np.ma.filled(table[f"anomaly_{name}"].astype(float), np.nan)
        for name in COMPONENTS if f"anomaly_{name}" in table.colnames
    }
    scores["combined"] = np.ma.filled(table["anomaly_score"].astype(float), np.nan)
    scores["random baseline"] = np.random.default_rng(seed).random(len(table))
    features = image_statistics(list(table["path"]))
    forest = IsolationForest(n_estimators=200, random_state=seed).fit(features)
    scores["iforest on image statistics"] = -forest.score_samples(features)
    result = evaluate_scores(scores, rare)
    click.echo(f"{result.meta['n_rare']} rare of {result.meta['n_total']} cutouts ({' or '.join(rules)})")
    shown = result.copy()
    for column in shown.colnames:
        if shown[column].dtype.kind == "f":
            shown[column].info.format = ".3f"
    shown.pprint(max_lines=-1, max_width=-1)
    if output:
        write_table(result, output)

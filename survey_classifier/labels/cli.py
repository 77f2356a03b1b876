"""``survey-classifier labels ...`` and ``survey-classifier evaluate active``."""

from __future__ import annotations

import getpass

import click

from survey_classifier.cli.group import CommandGroup
from survey_classifier.cli.options import db_option, format_option

__all__ = ["labels", "evaluate_active"]

author_option = click.option(
    "--author", default=None, help="Who gives the labels (default: the login name)."
)


@click.group(cls=CommandGroup)
def labels():
    """Label sources and SOM neurons; import, export; re-rank the anomalies by the labels."""


@labels.command("add")
@db_option
@click.argument("cutout_id", type=click.IntRange(min=1))
@click.option("--class", "label_class", default=None, help="The source's class (from a list or free text).")
@click.option("--interesting/--not-interesting", default=None, help="Whether the source is interesting.")
@click.option("--note", default=None, help="A note on the source.")
@author_option
def add(db_url, cutout_id, label_class, interesting, note, author):
    """Label one source (by its cutout id)."""
    from survey_classifier.db import make_engine
    from survey_classifier.labels.store import add_source_labels

    engine = make_engine(db_url)
    label = {"cutout_id": cutout_id, "label": label_class, "interesting": interesting, "note": note,
             "author": author or getpass.getuser(), "origin": "cli"}
    with engine.begin() as connection:
        (label_id,) = add_source_labels(connection, [label])
    click.echo(f"label {label_id} stored for cutout {cutout_id}")


@labels.command("neuron")
@db_option
@click.argument("node_x", type=click.IntRange(min=0))
@click.argument("node_y", type=click.IntRange(min=0))
@click.option("--class", "label_class", required=True, help="The neuron's class.")
@click.option("--note", default=None)
@click.option("--map", "model_ref", default=None,
              help="The SOM map, NAME:VERSION (default: the map of the SOM results shown by `query`).")
@click.option("--som-stage", default=None, help="SOM stage whose map is meant (default: the only one).")
@author_option
def neuron(db_url, node_x, node_y, label_class, note, model_ref, som_stage, author):
    """Label one neuron (NODE_X NODE_Y) of a SOM map."""
    from survey_classifier.db import make_engine
    from survey_classifier.labels.store import add_neuron_labels
    from survey_classifier.query import find_variants, stage_of_kind

    engine = make_engine(db_url)
    with engine.begin() as connection:
        if model_ref is None:
            variants = find_variants(connection)
            model_ref = variants[stage_of_kind(variants, "som", som_stage, "neuron label")].model
        (label_id,) = add_neuron_labels(connection, [{
            "model_ref": model_ref, "node_x": node_x, "node_y": node_y, "label": label_class, "note": note,
            "author": author or getpass.getuser(), "origin": "cli",
        }])
    click.echo(f"label {label_id} stored for neuron ({node_x}, {node_y}) of {model_ref}")


@labels.command("list")
@db_option
@click.option("--neurons", is_flag=True, help="Neuron labels instead of source labels.")
@click.option("--history", is_flag=True, help="Every label, not only the current one of each source/neuron.")
def list_labels(db_url, neurons, history):
    """Print the labels."""
    from survey_classifier.db import make_engine
    from survey_classifier.labels.catalogue import export_neuron_labels, export_source_labels

    engine = make_engine(db_url)
    table = export_neuron_labels(engine, history=history) if neurons else export_source_labels(engine, history=history)
    table.pprint(max_lines=-1, max_width=-1)
    click.echo(f"{len(table)} labels")


@labels.command("export")
@db_option
@click.option("-o", "--output", required=True, help="Table to write (.csv, .ecsv, .xml/.vot, .fits).")
@format_option
@click.option("--neurons", is_flag=True, help="Neuron labels instead of source labels.")
@click.option("--history", is_flag=True, help="Every label, not only the current one of each source/neuron.")
def export(db_url, output, fmt, neurons, history):
    """Write the labels as a catalogue table."""
    from survey_classifier.db import make_engine
    from survey_classifier.formats import write_table
    from survey_classifier.labels.catalogue import export_neuron_labels, export_source_labels

    engine = make_engine(db_url)
    table = export_neuron_labels(engine, history=history) if neurons else export_source_labels(engine, history=history)
    written = write_table(table, output, fmt)
    click.echo(f"wrote {len(table)} {'neuron' if neurons else 'source'} labels to {output} ({written})")


@labels.command("import")
@db_option
@click.argument("table_file", type=click.Path(exists=True, dir_okay=False))
@author_option
@click.option("--radius", "radius_arcsec", type=click.FloatRange(min=0, min_open=True), default=5.0,
              show_default=True, help="Largest distance (arcsec) of a position match.")
@click.option("--kind", type=click.Choice(["sources", "neurons"]), default=None,
              help="What the table labels (default: neurons when it has model_ref, node_x and node_y).")
@click.option("--class-column", default=None, help="Column with the class.")
@click.option("--interesting-column", default=None, help="Column with interesting (true/false, yes/no, 1/0).")
@click.option("--note-column", default=None, help="Column with the note.")
@click.option("--id-column", default=None, help="Column with the catalogue id to match sources by.")
@click.option("--ra-column", default=None, help="Column with RA (degrees, an angle unit, or sexagesimal hours).")
@click.option("--dec-column", default=None, help="Column with Dec (degrees, an angle unit, or sexagesimal).")
def import_command(db_url, table_file, author, radius_arcsec, kind, class_column, interesting_column, note_column,
                   id_column, ra_column, dec_column):
    """Store the labels of a catalogue table, matching sources by catalogue id, position or cutout id."""
    from survey_classifier.db import make_engine
    from survey_classifier.labels.catalogue import import_labels

    columns = {key: value for key, value in (
        ("label", class_column), ("interesting", interesting_column), ("note", note_column), ("id", id_column),
        ("ra", ra_column), ("dec", dec_column)) if value is not None}
    report = import_labels(make_engine(db_url), table_file, author=author, radius_arcsec=radius_arcsec, kind=kind,
                           columns=columns)
    click.echo(report.summary())


@labels.command("rerank")
@db_option
@click.option("--anomaly-stage", default=None, help="The unsupervised anomaly stage (default: the only one).")
@click.option("--top", type=click.IntRange(min=0), default=10, show_default=True,
              help="Print this many of the re-ranked list.")
@author_option
def rerank_command(db_url, anomaly_stage, top, author):
    """Refit the anomaly ranking to the interesting / not interesting labels (stage `reranked`)."""
    from survey_classifier.db import make_engine
    from survey_classifier.labels.ranking import RANKING_STAGE, rerank
    from survey_classifier.query import top_anomalies

    engine = make_engine(db_url)
    fit = rerank(engine, anomaly_stage=anomaly_stage, author=author or getpass.getuser())
    blend = fit["blend"]
    click.echo(
        f"{fit['model_ref']}: {fit['n_labels']} labels ({fit['n_interesting']} interesting), "
        f"mean trust in the model of interest {blend['mean_trust']:.2f}, {len(fit['features']['names'])} features of "
        f"{', '.join(f'{s} {v}' for s, v in sorted(fit['features']['variants'].items()))}; "
        f"{fit['metrics']['n_sources']} sources ranked in {fit['metrics']['fit_seconds']:.2f} s"
    )
    weights = list(fit["metrics"]["coefficients"].items())[:5]
    if weights:
        click.echo("strongest features: " + ", ".join(f"{name} {value:+.2f}" for name, value in weights))
    if top:
        table = top_anomalies(engine, top, stage=RANKING_STAGE)
        shown = [c for c in ("anomaly_rank", "cutout_id", "catalogue_id", "reranked_score", "reranked_unsupervised",
                             "reranked_interest", "label_interesting") if c in table.colnames]
        table[shown].pprint(max_lines=-1, max_width=-1)


@labels.command("calibration")
@db_option
@click.option("--som-stage", default=None, help="SOM stage (default: the only one).")
def calibration(db_url, som_stage):
    """How often sources' own labels agree with their neuron's, per distance bin (the reliability)."""
    from astropy.table import Table

    from survey_classifier.db import make_engine
    from survey_classifier.labels.neurons import calibrate
    from survey_classifier.query import find_variants, stage_of_kind

    engine = make_engine(db_url)
    with engine.connect() as connection:
        variants = find_variants(connection)
        stage = stage_of_kind(variants, "som", som_stage, "neuron labels")
        result = calibrate(connection, stage, variants[stage]).as_dict()
    click.echo(f"map {result['model_ref']}: {result['n_sources']} labelled sources on labelled neurons")
    if result["bins"]:
        Table(rows=result["bins"], names=list(result["bins"][0])).pprint(max_lines=-1, max_width=-1)


@click.command("active")
@db_option
@click.option("--rare", "rules", multiple=True, required=True,
              help="COLUMN=VALUE or COLUMN!=VALUE marking the sources the simulated user finds interesting "
                   "(any rule matches); repeatable.")
@click.option("--rounds", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--per-round", type=click.IntRange(min=1), default=10, show_default=True,
              help="Sources viewed and labelled per round.")
@click.option("--anomaly-stage", default=None, help="The unsupervised anomaly stage (default: the only one).")
@click.option("-o", "--output", default=None, help="Also write viewed,found_active,found_unsupervised (CSV ...).")
def evaluate_active(db_url, rules, rounds, per_round, anomaly_stage, output):
    """Simulate a user labelling down the anomaly list: rare sources found with and without re-ranking."""
    from survey_classifier.db import make_engine
    from survey_classifier.formats import write_table
    from survey_classifier.labels.simulate import simulate_from_database

    run = simulate_from_database(make_engine(db_url), list(rules), rounds=rounds, per_round=per_round,
                                 anomaly_stage=anomaly_stage)
    click.echo(f"{run.n_rare} rare of {run.n_sources} sources ({' or '.join(rules)}); "
               f"{rounds} rounds of {per_round} viewed")
    run.at().pprint(max_lines=-1, max_width=-1)
    if output:
        written = write_table(run.table(), output)
        click.echo(f"wrote {len(run.table())} rows to {output} ({written})")

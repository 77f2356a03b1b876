"""``survey-classifier query``: results, errors and top anomalies, printed or exported."""

from __future__ import annotations

import sys

import click

from survey_classifier.cli.group import fail
from survey_classifier.cli.options import db_option, format_option

__all__ = ["query"]


@click.command()
@db_option
@click.option("--stage", default=None, help="Only cutouts with results of this stage (filters apply to it).")
@click.option("--label", default=None, help="Only this class label.")
@click.option("--min-probability", type=click.FloatRange(0, 1), default=None)
@click.option("--run", "run_id", type=int, default=None, help="Only cutouts written by this run.")
@click.option("--ra", type=float, default=None, help="Cone centre RA (deg).")
@click.option("--dec", type=float, default=None, help="Cone centre Dec (deg).")
@click.option("--radius", type=float, default=None, help="Cone radius (deg).")
@click.option("--version", "versions", multiple=True, help="STAGE=VERSION[@MODEL] to show instead of the newest.")
@click.option("--limit", type=click.IntRange(min=1), default=None)
@click.option("--errors", "show_errors", is_flag=True, help="List the errors stored against cutouts instead.")
@click.option("--top-anomalies", type=click.IntRange(min=1), default=None,
              help="Only the N most anomalous cutouts, most anomalous first.")
@click.option("--gallery", type=click.Path(file_okay=False), default=None,
              help="With --top-anomalies: write gallery.png and index.html to this folder.")
@click.option("--anomaly-stage", default=None,
              help="With --top-anomalies: the anomaly stage ranked (e.g. reranked; default: the only one).")
@click.option("--label-class", default=None, help="Only sources whose current user label has this class.")
@click.option("--interesting/--not-interesting", default=None,
              help="Only sources a user labelled interesting (or not interesting).")
@click.option("-o", "--output", default=None, help="Write to a file instead of printing.")
@format_option
def query(db_url, stage, label, min_probability, run_id, ra, dec, radius, versions, limit, show_errors,
          top_anomalies, gallery, anomaly_stage, label_class, interesting, output, fmt):
    """Print or export results, one row per cutout."""
    from survey_classifier.db import make_engine
    from survey_classifier.formats import EXPORT_FORMATS, table_bytes, write_table
    from survey_classifier.query import query_errors, query_results

    engine = make_engine(db_url)
    if gallery and not top_anomalies:
        fail("--gallery needs --top-anomalies N")
    try:
        if show_errors:
            table = query_errors(engine, run_id=run_id)
        elif top_anomalies:
            from survey_classifier.anomaly.report import make_gallery
            from survey_classifier.query import top_anomalies as top

            table = top(engine, top_anomalies, run_id=run_id, stage=anomaly_stage)
            if gallery:
                png, page = make_gallery(table, gallery)
                click.echo(f"gallery: {png} and {page}")
        else:
            picks = dict(v.split("=", 1) for v in versions if "=" in v)
            table = query_results(
                engine, stage=stage, label=label, min_probability=min_probability, run_id=run_id,
                ra=ra, dec=dec, radius=radius, versions=picks, limit=limit, label_class=label_class,
                interesting=interesting,
            )
    except Exception as exc:  # a database without the schema, typically
        if "no such table" in str(exc) or "does not exist" in str(exc):
            fail("the database has no survey-classifier tables; run `survey-classifier db upgrade` first")
        raise
    if output:
        written = write_table(table, output, fmt)
        click.echo(f"wrote {len(table)} rows to {output} ({written})")
    elif fmt:
        if not EXPORT_FORMATS[fmt].text:
            fail(f"--format {fmt} is binary: give -o FILE")
        sys.stdout.write(table_bytes(table, fmt).decode("utf-8"))
    else:
        table.pprint(max_lines=-1, max_width=-1)
        click.echo(f"{len(table)} rows")


"""``survey-classifier query``: results, errors and top anomalies, printed or exported."""

from __future__ import annotations

import sys

import click

from survey_classifier.cli.group import fail
from survey_classifier.cli.options import db_option, format_option

__all__ = ["query"]

#: Columns printed on the terminal when ``--columns`` is not given (exports hold every column).
_PRINTED = ("cutout_id", "catalogue_id", "ra_deg", "dec_deg", "separation_arcsec", "anomaly_rank", "*_label",
            "*_probability", "*_node_x", "*_node_y", "*_score", "measure_peak_flux_jy", "measure_las_arcsec", "path",
            "stage", "error_type", "message")


@click.command()
@db_option
@click.option("--stage", default=None, help="Only cutouts with results of this stage (filters apply to it).")
@click.option("--label", default=None,
              help="Only this class label (of --stage, else of any classification stage that gave it).")
@click.option("--min-probability", type=click.FloatRange(0, 1), default=None)
@click.option("--run", "run_id", type=int, default=None, help="Only cutouts written by this run.")
@click.option("--ra", default=None, help="Cone centre RA: degrees (150.25) or sexagesimal hours (10:01:00, 10h01m).")
@click.option("--dec", default=None, help="Cone centre Dec: degrees (2.2) or sexagesimal (+02:12:00, 2d12m).")
@click.option("--position", default=None,
              help="Cone centre as one string, instead of --ra/--dec: '10:00:00 +02:12:00', '150.0 2.2'.")
@click.option("--radius", default=None, help="Cone radius: degrees (0.5) or with a unit (30arcsec, 2arcmin, 0.5deg).")
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
@click.option("--columns", default=None,
              help="Columns to show or export, comma-separated, in that order; patterns pick several "
                   "('cutout_id,ra_deg,dec_deg,cnn_*'; '*' for all). Printing shows the main ones by default.")
@click.option("--describe", is_flag=True, help="List the columns (unit, UCD, description) instead of the rows.")
@click.option("-o", "--output", default=None, help="Write to a file (format from its suffix) instead of printing.")
@format_option
def query(db_url, stage, label, min_probability, run_id, ra, dec, position, radius, versions, limit, show_errors,
          top_anomalies, gallery, anomaly_stage, label_class, interesting, columns, describe, output, fmt):
    """Print or export results, one row per cutout."""
    from survey_classifier.columns import columns_block, select_columns
    from survey_classifier.db.checks import open_database
    from survey_classifier.formats import EXPORT_FORMATS, table_bytes, write_table
    from survey_classifier.query import query_errors, query_results

    if gallery and not top_anomalies:
        fail("--gallery needs --top-anomalies N")
    engine = open_database(db_url)
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
        cone = _cone(ra, dec, position, radius)
        table = query_results(
            engine, stage=stage, label=label, min_probability=min_probability, run_id=run_id,
            versions=picks, limit=limit, label_class=label_class, interesting=interesting, **cone,
        )
    engine.dispose()  # read: nothing holds a connection past here
    table = select_columns(table, columns)
    if describe:
        _print_columns(columns_block(table))
    elif output:
        written = write_table(table, output, fmt)
        click.echo(f"wrote {len(table)} rows to {output} ({written})")
    elif fmt:
        if not EXPORT_FORMATS[fmt].text:
            fail(f"--format {fmt} is binary: give -o FILE")
        sys.stdout.write(table_bytes(table, fmt).decode("utf-8"))
    else:
        shown = table if columns else select_columns(table, [p for p in _PRINTED if _matches(table, p)])
        shown.pprint(max_lines=-1, max_width=-1)
        hidden = len(table.colnames) - len(shown.colnames)
        more = f"; {hidden} more columns: --columns '*' or a list, --describe, or -o FILE" if hidden else ""
        click.echo(f"{len(table)} rows{more}")


def _cone(ra, dec, position, radius) -> dict:
    """``ra``, ``dec`` and ``radius`` in degrees from what was typed (one parser: positions.py)."""
    from survey_classifier.positions import parse_dec, parse_position, parse_ra, parse_radius

    if position is not None and (ra is not None or dec is not None):
        fail("give the cone centre either as --position or as --ra and --dec, not both")
    given = (ra, dec, radius) if position is None else (position, radius)
    if all(v is None for v in given):
        return {}
    if any(v is None for v in given):
        fail("a cone search needs a centre (--ra and --dec, or --position) and --radius")
    if position is not None:
        ra_deg, dec_deg = parse_position(position, parameter="--position")
    else:
        ra_deg, dec_deg = parse_ra(ra, parameter="--ra"), parse_dec(dec, parameter="--dec")
    return {"ra": ra_deg, "dec": dec_deg, "radius": parse_radius(radius, parameter="--radius")}


def _matches(table, pattern: str) -> bool:
    import fnmatch

    return any(fnmatch.fnmatchcase(name, pattern) for name in table.colnames)


def _print_columns(block: list[dict]) -> None:
    width = max((len(c["name"]) for c in block), default=4)
    for column in block:
        unit = "-" if column["unit"] is None else (column["unit"] or "(dimensionless)")
        click.echo(f"{column['name']:<{width}}  {unit:<16} {column['ucd'] or '-':<36} {column['description']}")

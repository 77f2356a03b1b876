"""``survey-classifier runs``: the runs a results database holds."""

from __future__ import annotations

import click

from survey_classifier.cli.group import CommandGroup
from survey_classifier.cli.options import db_option

__all__ = ["runs"]


@click.group(cls=CommandGroup)
def runs():
    """The runs recorded in a results database."""


@runs.command("list")
@db_option
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="The newest N runs.")
def runs_list(db_url, limit):
    """List runs, newest first: when, status, cutouts processed and failed, stages and models."""
    from survey_classifier.db.checks import open_database
    from survey_classifier.query import list_runs

    table = list_runs(open_database(db_url), limit=limit)
    if len(table):
        table.pprint(max_lines=-1, max_width=-1)
    click.echo(f"{len(table)} runs" + (" (the newest; --limit for more)" if len(table) == limit else ""))
    if len(table):
        import shlex

        from survey_classifier.db.checks import shown_url

        newest = int(table["run"][0])
        db = f" --db {shlex.quote(shown_url(db_url))}" if db_url else ""
        click.echo(f"one run: survey-classifier status {newest}{db}  /  survey-classifier query --run {newest}{db}")

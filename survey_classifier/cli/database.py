"""``survey-classifier db``: create, upgrade or downgrade the results database."""

from __future__ import annotations

import click

from survey_classifier.cli.group import CommandGroup
from survey_classifier.cli.options import db_option

__all__ = ["db"]


@click.group(cls=CommandGroup)
def db():
    """Create, upgrade or downgrade the results database (through Alembic)."""


@db.command("upgrade")
@db_option
@click.option("--revision", default="head", show_default=True)
def db_upgrade(db_url, revision):
    """Create the schema or upgrade it to REVISION; records the shipped models."""
    from sqlalchemy.engine import make_url

    from survey_classifier.db import upgrade
    from survey_classifier.db.engine import resolve_db_url

    upgrade(db_url, revision)
    shown = make_url(resolve_db_url(db_url)).render_as_string(hide_password=True)
    click.echo(f"database {shown} at revision {revision}")


@db.command("downgrade")
@db_option
@click.option("--revision", default="base", show_default=True)
def db_downgrade(db_url, revision):
    """Downgrade the schema to REVISION (base drops every table)."""
    from survey_classifier.db import downgrade

    downgrade(db_url, revision)
    click.echo(f"downgraded to {revision}")

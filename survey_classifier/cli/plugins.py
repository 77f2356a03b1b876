"""``survey-classifier plugins``: the installed stages, and which run by default."""

from __future__ import annotations

import click

from survey_classifier.cli.group import CommandGroup
from survey_classifier.cli.options import db_option, remember_db_url

__all__ = ["plugins"]


@click.group(cls=CommandGroup)
def plugins():
    """Inspect the installed stage plugins and choose which run by default."""


@plugins.command("list")
@click.option("--db", "db_url", default=None, callback=remember_db_url,
              help="Also read which stages this database enables (default: only what is installed).")
def plugins_list(db_url):
    """List installed stages: version, result kind, whether they run by default, origin."""
    from survey_classifier.stages.plan import stage_switches
    from survey_classifier.stages.registry import available_stages, stage_distributions

    engine = None
    if db_url is not None:
        from survey_classifier.db import make_engine, upgrade

        upgrade(db_url)
        engine = make_engine(db_url)
    stages = available_stages()
    distributions = stage_distributions()
    switches = stage_switches(engine)
    click.echo(f"{'stage':<12} {'version':<8} {'kind':<15} {'on':<4} {'why':<26} {'requires':<28} distribution")
    for name, cls in sorted(stages.items()):
        requires = ",".join((*cls.requires, *cls.uses))
        on, why = switches[name]
        click.echo(
            f"{name:<12} {cls.version:<8} {cls.result_kind:<15} {'yes' if on else 'no':<4} {why:<26} "
            f"{requires:<28} {distributions.get(name, '?')}"
        )


@plugins.command("enable")
@db_option
@click.argument("name")
def plugins_enable(db_url, name):
    """Make stage NAME run by default in this database's runs."""
    _switch(db_url, name, True)


@plugins.command("disable")
@db_option
@click.argument("name")
def plugins_disable(db_url, name):
    """Stop stage NAME from running by default in this database's runs."""
    _switch(db_url, name, False)


def _switch(db_url, name, enabled):
    from survey_classifier.db import make_engine, upgrade
    from survey_classifier.stages.plan import default_stage_names, set_stage_enabled

    upgrade(db_url)
    engine = make_engine(db_url)
    set_stage_enabled(engine, name, enabled)
    click.echo(f"stage {name} {'enabled' if enabled else 'disabled'}; default stages: "
               f"{', '.join(default_stage_names(engine))}")

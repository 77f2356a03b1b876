"""The ``survey-classifier`` command line.

One module per family of commands, each mounted lazily on :data:`main`
(see :class:`~survey_classifier.cli.group.CommandGroup`); options shared by
several commands live in :mod:`survey_classifier.cli.options`. A new
command is a click command in its module plus one line in a ``lazy`` map.
"""

from __future__ import annotations

import logging

import click

from survey_classifier.cli.group import CommandGroup

__all__ = ["main"]


@click.group(
    cls=CommandGroup,
    lazy={
        "classify": "survey_classifier.cli.run:classify",
        "demo": "survey_classifier.cli.run:demo",
        "query": "survey_classifier.cli.query:query",
        "db": "survey_classifier.cli.database:db",
        "plugins": "survey_classifier.cli.plugins:plugins",
        "models": "survey_classifier.cli.models:models",
        "serve": "survey_classifier.api.cli:serve",
        "submit": "survey_classifier.cli.distributed:submit",
        "status": "survey_classifier.cli.distributed:status",
        "retry-failed": "survey_classifier.cli.distributed:retry_failed_command",
        "worker": "survey_classifier.cli.distributed:worker",
        "runs": "survey_classifier.cli.runs:runs",
        "labels": "survey_classifier.labels.cli:labels",
    },
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="survey-classifier")
def main(verbose: int) -> None:
    """Classify radio survey cutouts and keep the results in a database."""
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.captureWarnings(True)


@main.group(
    cls=CommandGroup,
    lazy={
        "cnn": "survey_classifier.cnn.cli:train_cnn",
        "cnn-table": "survey_classifier.cnn.cli:cnn_table",
        "cnn-ensemble": "survey_classifier.cnn.cli:cnn_ensemble",
        "encoder": "survey_classifier.cnn.cli:train_encoder",
        "som": "survey_classifier.som.cli:train_som",
        "anomaly": "survey_classifier.anomaly.cli:train_anomaly",
    },
)
def train():
    """Train models (CNN, SOM, anomaly scorer)."""


@main.group(cls=CommandGroup, lazy={"som": "survey_classifier.som.cli:show_som"})
def show():
    """Show the pictures of a trained model (SOM prototypes, hits, best matches)."""


@main.group(
    cls=CommandGroup,
    lazy={
        "anomaly": "survey_classifier.anomaly.cli:evaluate_anomaly",
        "active": "survey_classifier.labels.cli:evaluate_active",
    },
)
def evaluate():
    """Evaluate stages on labelled catalogues."""

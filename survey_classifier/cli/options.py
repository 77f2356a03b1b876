"""Options shared by the commands (and the subpackages' commands), declared once."""

from __future__ import annotations

import json

import click

from survey_classifier.cli.group import DB_URL_KEY
from survey_classifier.formats import EXPORT_FORMATS
from survey_classifier.io.fits import MAX_MEMORY_ENV, parse_memory
from survey_classifier.workers.queues import QUEUES

__all__ = [
    "db_option",
    "remember_db_url",
    "broker_option",
    "queue_option",
    "format_option",
    "catalogue_options",
    "stage_options",
    "mosaic_options",
    "parse_params",
    "max_memory_option",
]



def remember_db_url(ctx: click.Context, _param, value):
    """Keep the ``--db`` URL where the command group finds it to explain a database problem."""
    ctx.meta[DB_URL_KEY] = value
    return value


db_option = click.option(
    "--db",
    "db_url",
    default=None,
    callback=remember_db_url,
    help="Database URL (default: $SURVEY_CLASSIFIER_DB or sqlite:///survey-classifier.db).",
)

broker_option = click.option(
    "--broker",
    default=None,
    help="Broker URL (default: $SURVEY_CLASSIFIER_BROKER or redis://127.0.0.1:6379/0).",
)

queue_option = click.option(
    "--queue", default=QUEUES[0], show_default=True, type=click.Choice(QUEUES),
    help="Queue for the batches: gpu sends them to GPU workers (for the cnn stage).",
)

def _memory(_ctx, _param, value):
    if value is None:
        return None
    try:
        return parse_memory(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


max_memory_option = click.option(
    "--max-memory", default=None, envvar=MAX_MEMORY_ENV, callback=_memory, metavar="SIZE",
    help="Refuse a cutout whose memory need, estimated from its header before decoding (file, decompressed "
         "bytes and working copies of the image), exceeds SIZE (800M, 1.5G); default: no limit "
         f"(${MAX_MEMORY_ENV}).",
)

format_option = click.option(
    "--format", "fmt", type=click.Choice(sorted(EXPORT_FORMATS)), default=None,
    help="Table format (default: from the output file's suffix).",
)


def catalogue_options(function):
    """Options naming the columns of an input catalogue."""
    for option in reversed(
        [
            click.option("--file-column", default=None, help="Catalogue column naming the cutout file."),
            click.option("--id-column", default=None, help="Catalogue column with the source id."),
            click.option("--ra-column", default=None,
                         help="Catalogue column with RA: a number in its unit (else degrees) or sexagesimal hours."),
            click.option("--dec-column", default=None,
                         help="Catalogue column with Dec: a number in its unit (degrees without one) or sexagesimal."),
            click.option("--base-dir", default=None, type=click.Path(file_okay=False),
                         help="Folder that relative file names in a catalogue refer to (default: the catalogue's)."),
        ]
    ):
        function = option(function)
    return function


def mosaic_options(function):
    """``--mosaics``, ``--cutout-size`` and ``--save-cutouts``: cutouts cut from survey mosaics."""
    for option in reversed(
        [
            click.option("--mosaics", default=None, metavar="DIR_OR_GLOB",
                         help="Mosaic tiles (a folder, a glob, or their URL) to cut the catalogue's positions from; "
                              "INPUTS are then catalogues of positions."),
            click.option("--cutout-size", default=None, metavar="SIZE",
                         help="Side of the cutouts cut from --mosaics: pixels (150) or an angle (270arcsec, 4.5arcmin)"
                              " [default: 150 pixels]."),
            click.option("--save-cutouts", default=None, metavar="DIR",
                         help="Also write the cutouts cut from --mosaics as FITS files in DIR (a folder or a URL)."),
        ]
    ):
        function = option(function)
    return function


def stage_options(function):
    """``--stages``, ``--param`` and ``--recompute``."""
    function = click.option("--recompute", is_flag=True,
                            help="Compute the stages that named ones need, instead of reading their stored results.")(
        function)
    function = click.option("--param", "params", multiple=True,
                            help="Stage parameter STAGE.NAME=VALUE (VALUE as JSON).")(function)
    return click.option("--stages", default=None,
                        help="Comma-separated stage names (default: the default stages).")(function)


def parse_params(values: tuple[str, ...]) -> dict[str, dict]:
    """``STAGE.KEY=VALUE`` options (VALUE as JSON, else a string) by stage."""
    params: dict[str, dict] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        stage, dot, name = key.partition(".")
        if not sep or not dot or not stage or not name:
            msg = f"--param expects STAGE.NAME=VALUE, got {item!r}"
            raise click.BadParameter(msg, param_hint="--param")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        params.setdefault(stage, {})[name] = value
    return params

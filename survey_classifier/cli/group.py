"""The command groups of the command line, and the one place package errors become CLI errors.

Every group of ``survey-classifier`` is a :class:`CommandGroup`: its
subcommands may be imported only when used (training commands import
TensorFlow, the service FastAPI), and a
:class:`~survey_classifier.errors.SurveyClassifierError` raised by any
command under it is printed as one line (``Error: ...``, exit status 1)
instead of a traceback. Commands just let package errors rise.

Errors of the database drivers (SQLAlchemy, psycopg, SQLite, Alembic)
that are connection or schema problems become one line too, naming the
command that fixes them (``createdb ...``, ``survey-classifier db upgrade
--db ...``; see :func:`survey_classifier.db.checks.explain`), for the
database the command was given (:data:`DB_URL_KEY`, set by ``--db``).
"""

from __future__ import annotations

import importlib

import click

from survey_classifier.errors import SurveyClassifierError

__all__ = ["CommandGroup", "fail", "DB_URL_KEY"]

#: Key of ``click.Context.meta`` (shared by a command and its groups) under which ``--db`` keeps its URL.
DB_URL_KEY = "survey_classifier.db_url"
#: Modules whose errors may be database problems worth one line.
_DATABASE_MODULES = ("sqlalchemy", "psycopg", "sqlite3", "alembic")


def fail(message: str) -> None:
    """Stop the command with ``message`` (exit status 1)."""
    raise click.ClickException(message)


class CommandGroup(click.Group):
    """A group whose ``lazy`` subcommands (``name: "module:attribute"``) are imported when used,
    and which turns package errors into one-line CLI errors."""

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx, name):
        if name in self.lazy:
            module, _, attribute = self.lazy[name].partition(":")
            return getattr(importlib.import_module(module), attribute)
        return super().get_command(ctx, name)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SurveyClassifierError as exc:
            raise click.ClickException(str(exc)) from exc
        except Exception as exc:
            problem = _database_problem(exc, ctx)
            if problem is None:
                raise
            raise click.ClickException(str(problem)) from exc


def _database_problem(exc: Exception, ctx: click.Context):
    """The one-line database problem ``exc`` is, or None for any other error."""
    if not type(exc).__module__.startswith(_DATABASE_MODULES):
        return None
    from survey_classifier.db.checks import explain

    return explain(exc, ctx.meta.get(DB_URL_KEY))

"""The command groups of the command line, and the one place package errors become CLI errors.

Every group of ``survey-classifier`` is a :class:`CommandGroup`: its
subcommands may be imported only when used (training commands import
TensorFlow, the service FastAPI), and a
:class:`~survey_classifier.errors.SurveyClassifierError` raised by any
command under it is printed as one line (``Error: ...``, exit status 1)
instead of a traceback. Commands just let package errors rise.
"""

from __future__ import annotations

import importlib

import click

from survey_classifier.errors import SurveyClassifierError

__all__ = ["CommandGroup", "fail"]


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

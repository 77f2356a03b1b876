"""The progress bar of a run (``classify``, ``submit``) and the closing lines about its failures.

The bar shows rate and ETA, and in its postfix how many cutouts failed,
by stage (``failed: read 1, cnn 2``); log lines written meanwhile go
above the bar instead of through it. The closing summary names the
command that lists every failure.
"""

from __future__ import annotations

import shlex
import sys
from collections import Counter
from collections.abc import Mapping

import click

__all__ = ["RunProgress", "failure_postfix", "errors_command", "echo_errors_hint"]


def failure_postfix(failed_by_stage: Mapping[str, int]) -> str:
    """``"failed: read 1, cnn 2"`` (stages in pipeline order as given), or ``"no failures"``."""
    parts = [f"{stage} {count}" for stage, count in failed_by_stage.items() if count]
    return "failed: " + ", ".join(parts) if parts else "no failures"


def errors_command(run_id: int, db_url: str | None) -> str:
    """The command that lists every error of run ``run_id``."""
    command = f"survey-classifier query --errors --run {run_id}"
    if db_url:
        from survey_classifier.db.checks import shown_url

        command += f" --db {shlex.quote(shown_url(db_url))}"
    return command


class RunProgress:
    """A tqdm bar over a run's cutouts whose postfix counts failed cutouts by stage.

    Use as a context manager; feed it :meth:`batch_done` (in process) or
    :meth:`status` (a run on workers).
    """

    def __init__(self, total: int, *, quiet: bool = False, stages=()):
        self.total = total
        self.quiet = quiet
        self.failed: Counter = Counter({name: 0 for name in ("read", *stages)})
        self.bar = None
        self._redirect = None

    def __enter__(self) -> RunProgress:
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        self.bar = tqdm(total=self.total, unit="cutout", disable=self.quiet, file=sys.stderr)
        self._redirect = logging_redirect_tqdm()
        self._redirect.__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        self._redirect.__exit__(*exc_info)
        self.bar.close()

    def _show(self) -> None:
        self.bar.set_postfix_str(failure_postfix(self.failed), refresh=False)
        self.bar.refresh()

    def batch_done(self, batch) -> None:
        """One stored :class:`~survey_classifier.outcomes.BatchResult` (a cutout counts once per stage)."""
        for outcome in batch.outcomes:
            self.failed.update({error.stage for error in outcome.errors})
        self.bar.update(len(batch.outcomes))
        self._show()

    def status(self, n_done: int, failed_by_stage: Mapping[str, int], *, note: str = "") -> None:
        """Where a run on workers stands: cutouts done, failed cutouts by stage, a note before the bar."""
        self.bar.set_description_str(note, refresh=False)
        self.bar.n = n_done
        for stage, count in failed_by_stage.items():
            self.failed[stage] = count
        self._show()

    def note(self, text: str) -> None:
        """A note before the bar, the counts unchanged (the database is out of reach, say)."""
        self.bar.set_description_str(text, refresh=False)
        self._show()


def echo_errors_hint(run_id: int, db_url: str | None, n_failed: int) -> None:
    """The closing line that says how to list every failure."""
    if n_failed:
        click.echo(f"list them all: {errors_command(run_id, db_url)}")

"""What processing produced, before and after it is stored: plain data classes.

Made by :class:`~survey_classifier.pipeline.Pipeline`, written by
:mod:`survey_classifier.runs`; neither module needs the other to read them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from survey_classifier.cutout import Cutout, CutoutSource

__all__ = ["FailureRecord", "CutoutOutcome", "BatchResult", "RunSummary"]


@dataclass
class FailureRecord:
    """A failure of one stage (or of reading) on one cutout."""

    stage: str
    stage_version: str
    model_ref: str
    error_type: str
    message: str
    hdu: int | None = None
    model_sha256: str | None = None


@dataclass
class CutoutOutcome:
    """What the pipeline made of one input."""

    source: CutoutSource
    cutout: Cutout | None = None
    errors: list[FailureRecord] = field(default_factory=list)
    #: Stages whose results were read from the database (already stored: not stored again).
    reused: set[str] = field(default_factory=set)


@dataclass
class BatchResult:
    """Outcomes of one batch, with the seconds spent in each step."""

    outcomes: list[CutoutOutcome]
    timings: dict[str, float]


@dataclass
class RunSummary:
    """What a run did, for the closing summary and the ``runs`` table."""

    run_id: int
    n_cutouts: int
    n_processed: int
    n_failed: int
    failures: list[tuple[str, str, str]]
    timings: dict[str, float]
    elapsed_s: float
    #: Results read from the database instead of computed, counted by stage.
    reused: Counter = field(default_factory=Counter)
    #: True when this run was an interrupted one of the same inputs, resumed.
    resumed: bool = False

    @property
    def reasons(self) -> Counter:
        """Failures counted by stage and reason."""
        return Counter((stage, message) for _, stage, message in self.failures)

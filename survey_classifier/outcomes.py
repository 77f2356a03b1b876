"""What processing produced, before and after it is stored: plain data classes.

Made by :class:`~survey_classifier.pipeline.Pipeline`, written by
:mod:`survey_classifier.runs`; neither module needs the other to read them.
"""

from __future__ import annotations

import re
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
    def reasons(self) -> dict[tuple[str, str], list[str]]:
        """The failed files by stage and reason, reasons that differ only in their figures together.

        The key's reason is the message itself when all its failures say the same, else the
        message with its figures written ``…`` (:func:`reason_kind`); most failures first.
        """
        groups: dict[tuple[str, str], tuple[set[str], list[str]]] = {}
        for path, stage, message in self.failures:
            messages, files = groups.setdefault((stage, reason_kind(message)), (set(), []))
            messages.add(message)
            files.append(path)
        shown = {
            (stage, next(iter(messages)) if len(messages) == 1 else kind): files
            for (stage, kind), (messages, files) in groups.items()
        }
        return dict(sorted(shown.items(), key=lambda item: -len(item[1])))


#: A figure in a message (``4.4``, ``0.172``, ``1e-05``), not a digit inside a word or a file name.
_FIGURE = re.compile(r"(?<![\w.…+-])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w.])")


def reason_kind(message: str) -> str:
    """``message`` with its figures written ``…``, so failures that differ only in them count together.

    >>> reason_kind("brightest pixel 4.4 sigma above the background, noise 0.172 mJy/beam")
    'brightest pixel … sigma above the background, noise … mJy/beam'
    >>> reason_kind("HDU 1 of 110_177.417+038.195.fits is empty")
    'HDU … of 110_177.417+038.195.fits is empty'
    """
    return _FIGURE.sub("…", message)

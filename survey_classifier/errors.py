"""The exception root of survey-classifier and its few specific subclasses.

Every error that concerns one cutout carries the file and, where known, the HDU,
so that the message stored against the cutout tells an astronomer exactly which
input was wrong and how.
"""

from __future__ import annotations

__all__ = [
    "SurveyClassifierError",
    "BrokerError",
    "CutoutError",
    "CutoutReadError",
    "CutoutLimitError",
    "StageError",
    "StageConfigError",
    "NotFittedError",
    "ModelError",
    "CatalogueError",
    "DatabaseError",
    "LabelError",
    "SurveyClassifierWarning",
    "FITSQuirkWarning",
    "NoWCSWarning",
    "caused_by",
]


class SurveyClassifierError(Exception):
    """Root of every error raised by survey-classifier."""


class CutoutError(SurveyClassifierError):
    """A problem with one cutout; the batch it belongs to goes on.

    Parameters
    ----------
    path : str
        The file the cutout came from.
    reason : str
        What was wrong, in words an astronomer can act on.
    hdu : int or None
        Index of the HDU concerned, when one was reached.
    """

    def __init__(self, path, reason, *, hdu=None):
        self.path = str(path)
        self.reason = reason
        self.hdu = hdu
        where = self.path if hdu is None else f"{self.path} [HDU {hdu}]"
        super().__init__(f"{where}: {reason}")


class CutoutReadError(CutoutError):
    """The file could not be read as an image cutout."""


class CutoutLimitError(CutoutError):
    """The file or image is larger than the configured limits."""


class StageError(SurveyClassifierError):
    """A stage failed on a cutout or could not be set up."""


class StageConfigError(StageError):
    """A stage was configured with invalid parameters or unmet requirements."""


class NotFittedError(StageError):
    """A learned stage or estimator was used before being fitted or loaded."""


class ModelError(SurveyClassifierError):
    """A model artefact is missing, corrupted or incompatible."""


class CatalogueError(SurveyClassifierError):
    """An input catalogue table is unreadable or lacks the columns needed."""


class DatabaseError(SurveyClassifierError):
    """The results database is missing or unreachable, or its schema is not the one this version needs.

    The message says what is wrong and the command that fixes it
    (``createdb ...``, ``survey-classifier db upgrade --db ...``).
    """


class BrokerError(SurveyClassifierError):
    """The message broker (Redis) is unreachable; the message says what was queued and what resumes it."""


class LabelError(SurveyClassifierError):
    """A user's label is malformed, or names a source, neuron or label that is not stored."""


class SurveyClassifierWarning(UserWarning):
    """Root of the warnings issued by survey-classifier."""


class FITSQuirkWarning(SurveyClassifierWarning):
    """A FITS file breaks the standard in a way that was tolerated."""


class NoWCSWarning(SurveyClassifierWarning):
    """A cutout has no usable celestial WCS; its position is unknown."""


def caused_by(exc: BaseException, types: tuple[type[BaseException], ...]) -> BaseException | None:
    """The exception of one of ``types`` that ``exc`` is or wraps (through ``raise ... from`` or while
    handling), or None: a time limit wrapped by a reader or a plugin loader is still a time limit."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, types):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None

"""Rotation- and flip-invariant self-organising maps (PINK-class) with a fast polar core.

See ``docs/som.md``. The estimator is :class:`RotationInvariantSOM`; PINK's
binary formats are in :mod:`survey_classifier.som.pink`, pictures in
:mod:`survey_classifier.som.plots`, the brute-force yardstick in
:mod:`survey_classifier.som.reference`.
"""

from survey_classifier.som._grid import MapGrid
from survey_classifier.som.som import (
    SOM_FORMAT,
    SOM_FORMAT_VERSION,
    RotationInvariantSOM,
    SOMMapping,
)

__all__ = [
    "MapGrid",
    "RotationInvariantSOM",
    "SOMMapping",
    "SOM_FORMAT",
    "SOM_FORMAT_VERSION",
]

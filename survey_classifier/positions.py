"""Sky positions and radii as astronomers write them: one parser for the CLI, the API and the page.

Every cone search reads its centre and radius through these functions,
which hand the text to astropy's own parsers
(:class:`~astropy.coordinates.Angle`, :class:`~astropy.units.Quantity`):

- a plain number is in degrees: ``150.25``, ``-2.5``;
- sexagesimal right ascension is in hours, declination in degrees:
  ``10:00:00``, ``10 00 00``, ``+02:12:00``, ``-00 30 00``;
- explicit units are honoured: ``10h00m00s``, ``150d15m``, ``+2d12m``,
  ``150.25deg``;
- a radius may carry an angular unit: ``30arcsec``, ``30"``, ``2arcmin``,
  ``2'``, ``0.5deg``; a plain number is in degrees.

A position may be given as one string (``parse_position``): RA and Dec
separated by a space or a comma (``10:00:00 +02:12:00``, ``150.0, 2.2``,
``10 00 00 +02 12 00``). Coordinates are ICRS, as stored. Text that is
not an angle, or is out of range, raises :class:`PositionError` naming the
parameter and what was expected.

>>> from survey_classifier.positions import parse_position, parse_radius
>>> parse_position("10:00:00 +02:12:00")
(150.0, 2.2)
>>> round(parse_radius("30arcsec") * 3600, 6)
30.0
"""

from __future__ import annotations

import math
import re
import warnings

from astropy import units as u
from astropy.coordinates import Angle

from survey_classifier.errors import SurveyClassifierError

__all__ = ["PositionError", "parse_ra", "parse_dec", "parse_radius", "parse_position"]

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_SEXAGESIMAL = re.compile(r"^[+-]?\d+(\.\d*)?([: ]+\d+(\.\d*)?){1,2}$")
_LONGEST = 64


class PositionError(SurveyClassifierError):
    """A position or radius that cannot be read; ``parameter`` names which one."""

    def __init__(self, message: str, parameter: str):
        super().__init__(message)
        self.parameter = parameter


def _text(value, parameter: str) -> str:
    if isinstance(value, bool) or value is None:
        msg = f"{parameter}: expected an angle, got {value!r}"
        raise PositionError(msg, parameter)
    text = str(value).strip()
    if not text:
        msg = f"{parameter}: expected an angle, got an empty value"
        raise PositionError(msg, parameter)
    if len(text) > _LONGEST:
        msg = f"{parameter}: {text[:20]!r}... is too long to be an angle"
        raise PositionError(msg, parameter)
    return text


def _rounded(degrees: float) -> float:
    """Degrees to 1e-10 (0.4 microarcsec): ``10:00:00`` is 150.0, not 149.99999999999997."""
    return round(float(degrees), 10)


def _angle_deg(value, parameter: str, *, sexagesimal_unit, example: str) -> float:
    """Degrees from a number, sexagesimal text (in ``sexagesimal_unit``) or text with units."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        degrees = float(value)
    else:
        text = _text(value, parameter)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # astropy warns of 60 seconds and the like: refuse them
                if _NUMBER.match(text):
                    degrees = float(text)
                elif _SEXAGESIMAL.match(text):
                    degrees = _rounded(Angle(text, unit=sexagesimal_unit).to_value(u.deg))
                else:
                    degrees = _rounded(Angle(text).to_value(u.deg))
        except (ValueError, u.UnitsError, Warning) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            msg = f"{parameter}: {text!r} is not an angle ({reason}); write e.g. {example}"
            raise PositionError(msg, parameter) from None
    if not math.isfinite(degrees):
        msg = f"{parameter}: must be a finite angle, got {value!r}"
        raise PositionError(msg, parameter)
    return float(degrees)


def parse_ra(value, *, parameter: str = "ra") -> float:
    """Right ascension in degrees, in [0, 360): a number of degrees, sexagesimal hours, or with units."""
    degrees = _angle_deg(value, parameter, sexagesimal_unit=u.hourangle, example="150.25, 10:01:00 or 10h01m00s")
    if not 0.0 <= degrees <= 360.0:
        msg = f"{parameter}: right ascension must be in [0, 360] degrees (or [0, 24) hours), got {value!r}"
        raise PositionError(msg, parameter)
    return 0.0 if degrees == 360.0 else degrees


def parse_dec(value, *, parameter: str = "dec") -> float:
    """Declination in degrees, in [-90, 90]: a number of degrees, sexagesimal degrees, or with units."""
    degrees = _angle_deg(value, parameter, sexagesimal_unit=u.deg, example="2.2, +02:12:00 or 2d12m")
    if not -90.0 <= degrees <= 90.0:
        msg = f"{parameter}: declination must be in [-90, 90] degrees, got {value!r}"
        raise PositionError(msg, parameter)
    return degrees


def parse_radius(value, *, parameter: str = "radius", maximum_deg: float = 180.0) -> float:
    """A cone radius in degrees, in (0, ``maximum_deg``]: degrees, or with a unit (``30arcsec``, ``2'``)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        degrees = float(value)
    else:
        text = _text(value, parameter)
        if _NUMBER.match(text):
            degrees = float(text)
        else:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error")
                    degrees = Angle(text).to_value(u.deg)
            except (ValueError, u.UnitsError, Warning) as exc:
                reason = " ".join(str(exc).split()) or type(exc).__name__
                msg = f"{parameter}: {text!r} is not an angle ({reason}); write e.g. 0.5, 30arcsec, 2arcmin or 0.5deg"
                raise PositionError(msg, parameter) from None
    if not math.isfinite(degrees) or not 0.0 < degrees <= maximum_deg:
        limit = f"{maximum_deg:g} degrees" if maximum_deg >= 1 else f"{maximum_deg * 3600:g} arcsec"
        msg = f"{parameter}: a cone radius must be above 0 and at most {limit}, got {value!r}"
        raise PositionError(msg, parameter)
    return degrees


def parse_position(value, *, parameter: str = "position") -> tuple[float, float]:
    """``(ra_deg, dec_deg)`` from one string: ``"10:00:00 +02:12:00"``, ``"150.0, 2.2"``, ``"10h00m +2d12m"``."""
    text = _text(value, parameter)
    if "," in text:
        parts = [p.strip() for p in text.split(",")]
    else:
        tokens = text.split()
        if len(tokens) == 2:
            parts = tokens
        elif len(tokens) == 6:
            parts = [" ".join(tokens[:3]), " ".join(tokens[3:])]
        elif len(tokens) == 4:
            parts = [" ".join(tokens[:2]), " ".join(tokens[2:])]
        else:
            found = re.match(r"^(\S+?)([+-]\S+)$", text)
            parts = list(found.groups()) if found else []
    if len(parts) != 2 or not all(parts):
        msg = (
            f"{parameter}: {text!r} is not a position; give RA and Dec separated by a space or a comma, "
            "e.g. '10:00:00 +02:12:00', '10h00m00s +2d12m00s' or '150.0 2.2'"
        )
        raise PositionError(msg, parameter)
    return parse_ra(parts[0], parameter=parameter), parse_dec(parts[1], parameter=parameter)

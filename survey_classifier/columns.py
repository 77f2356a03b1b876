"""Every output column described once: its name, unit, UCD, description and display format.

A :class:`Column` is declared where the value is made: the database models
declare theirs on each SQLAlchemy column (``info=describe(...)``), a stage
declares the extra fields of its results (:attr:`Stage.result_columns
<survey_classifier.stages.base.Stage.result_columns>`), the query module
the values it computes (a cone's separations, anomaly ranks). The query
attaches each description to its :class:`astropy.table.Table` column
(:func:`annotate`); every output then reads it from there: VOTable
``FIELD`` unit, ``ucd`` and ``DESCRIPTION``, FITS ``TUNITn``/``TCOMMn``/
``TUCDn``, ECSV (and the ECSV-style header of CSV), the ``columns`` block of
the REST answers and ``query --describe``.

Units are astropy unit strings; ``""`` marks a dimensionless number (a
probability, a count) and is written as an explicit empty unit, while
``None`` marks a value that is not a quantity (text, identifiers, flags).
UCDs are checked against the IVOA UCD1+ vocabulary when a column is made.

>>> from survey_classifier.columns import Column
>>> ra = Column("ra_deg", "Right ascension (ICRS)", unit="deg", ucd="pos.eq.ra;meta.main", format=".7f")
>>> ra.astropy_unit
Unit("deg")
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING

from astropy import units as u

from survey_classifier.errors import SurveyClassifierError

if TYPE_CHECKING:
    from astropy.table import Table

__all__ = [
    "Column",
    "ColumnFamily",
    "describe",
    "described_columns",
    "family_of",
    "annotate",
    "column_of",
    "columns_block",
    "select_columns",
    "order_columns",
]

#: Key under which a column's description is kept in SQLAlchemy ``Column.info``.
INFO_KEY = "column"


def _check_unit(name: str, unit: str | None) -> None:
    if unit is None or unit == "":
        return
    try:
        u.Unit(unit)
    except ValueError as exc:
        msg = f"column {name!r}: unit {unit!r} is not an astropy unit ({exc})"
        raise ValueError(msg) from None


def _check_ucd(name: str, ucd: str | None) -> None:
    if ucd is None:
        return
    from astropy.io.votable.ucd import check_ucd

    if not check_ucd(ucd, check_controlled_vocabulary=True):
        msg = f"column {name!r}: {ucd!r} is not a valid UCD1+ (see https://www.ivoa.net/documents/UCD1+/)"
        raise ValueError(msg)


@dataclass(frozen=True)
class Column:
    """The description of one output column.

    Parameters
    ----------
    name : str
        The column's name in every output.
    description : str
        One sentence an astronomer can act on, written into every format.
    unit : str or None
        An astropy unit string (``"deg"``, ``"Jy/beam"``, ``"arcsec"``);
        ``""`` for a dimensionless number; None for text, identifiers and
        flags.
    ucd : str or None
        An IVOA UCD1+ (``"pos.eq.ra;meta.main"``); checked when made.
    format : str or None
        Display format (a Python format spec, ``".4f"``) used when a table
        is printed; exports keep full precision.
    """

    name: str
    description: str
    unit: str | None = None
    ucd: str | None = None
    format: str | None = None

    def checked(self) -> Column:
        """This column, once its description, unit and UCD are checked (ValueError otherwise).

        Declared columns are checked where they are declared; descriptions
        read back from a user's catalogue are reported as they came.
        """
        if not self.description:
            msg = f"column {self.name!r} has no description"
            raise ValueError(msg)
        _check_unit(self.name, self.unit)
        _check_ucd(self.name, self.ucd)
        return self

    @property
    def astropy_unit(self) -> u.UnitBase | None:
        """The unit as an astropy unit (dimensionless for ``""``, None for no unit)."""
        return _astropy_unit(self.unit)

    def renamed(self, name: str, *, prefix: str = "") -> Column:
        """The same description under another name (``prefix`` goes before the description)."""
        return replace(self, name=name, description=f"{prefix}{self.description}")

    def as_dict(self) -> dict:
        """JSON-ready: name, unit, ucd, description, format."""
        return {"name": self.name, "unit": self.unit, "ucd": self.ucd, "description": self.description,
                "format": self.format}


@lru_cache(maxsize=1024)
def _astropy_unit(unit: str | None) -> u.UnitBase | None:
    """A unit string parsed once per process (parsing is a third of a results page's time otherwise)."""
    if unit is None:
        return None
    return u.dimensionless_unscaled if unit == "" else u.Unit(unit, parse_strict="silent")


@dataclass(frozen=True)
class ColumnFamily:
    """Columns made from the keys of a mapping, e.g. ``p_{key}`` from class probabilities.

    ``pattern`` and ``description`` hold ``{key}``.
    """

    pattern: str
    description: str
    unit: str | None = None
    ucd: str | None = None
    format: str | None = None

    def __post_init__(self):
        self.column("key").checked()

    def column(self, key: str) -> Column:
        """The column for one key."""
        return Column(self.pattern.format(key=key), self.description.format(key=key), self.unit, self.ucd,
                      self.format)


def describe(description: str, *, unit: str | None = None, ucd: str | None = None, format: str | None = None,
             family: ColumnFamily | None = None) -> dict:
    """``info=`` of a SQLAlchemy column: its description (the name comes from the column).

    ``family`` describes the columns a JSON mapping column expands into.
    """
    info = {INFO_KEY: Column("_", description, unit, ucd, format).checked()}
    if family is not None:
        info["family"] = family
    return info


@lru_cache(maxsize=64)
def described_columns(row_class) -> dict[str, Column]:
    """``{name: Column}`` of the columns a database model describes (made once: do not change it)."""
    out = {}
    for column in row_class.__table__.columns:
        spec = column.info.get(INFO_KEY)
        if spec is not None:
            out[column.name] = spec.renamed(column.name)
    return out


def family_of(row_class, column_name: str) -> ColumnFamily | None:
    """The family a JSON column of a database model expands into, if it declares one."""
    column = row_class.__table__.columns.get(column_name)
    return None if column is None else column.info.get("family")


def annotate(column, spec: Column):
    """Attach ``spec`` (unit, description, UCD, display format) to an astropy table column."""
    column.info.unit = spec.astropy_unit
    column.info.description = spec.description
    if spec.format is not None and column.dtype.kind == "f":
        column.info.format = spec.format
    meta = column.info.meta  # changed in place: assigning a new one deep-copies it, a tenth of a query's time
    if meta is None:  # a mixin column (Time) without any yet
        column.info.meta = meta = {}
        meta = column.info.meta
    if spec.ucd:
        meta["ucd"] = spec.ucd
    else:
        meta.pop("ucd", None)
    return column


def column_of(table: Table, name: str) -> Column:
    """The description attached to ``table[name]`` (what every writer reads)."""
    column = table[name]
    unit_text = _unit_text(column.info.unit)
    meta = column.info.meta or {}
    description = column.info.description or f"column {name!r}"
    form = column.info.format if isinstance(column.info.format, str) else None
    return Column(name, description, unit_text, meta.get("ucd"), form)


@lru_cache(maxsize=1024)
def _unit_text(unit: u.UnitBase | None) -> str | None:
    """How a column's unit is written: None for no unit, ``""`` for dimensionless (written once per unit)."""
    if unit is None:
        return None
    if unit == u.dimensionless_unscaled:
        return ""
    return unit.to_string()


def columns_block(table: Table) -> list[dict]:
    """The ``columns`` block of a JSON answer: name, unit, ucd, description and format of each column."""
    return [column_of(table, name).as_dict() for name in table.colnames]


def select_columns(table: Table, wanted: str | Sequence[str] | None) -> Table:
    """``table`` with only the ``wanted`` columns, in that order.

    ``wanted`` is a comma-separated string or a list of names; shell-style
    patterns (``cnn_*``) pick every matching column in table order. An
    unknown name is refused, naming the columns there are.
    """
    if wanted is None:
        return table
    names = [w.strip() for w in (wanted.split(",") if isinstance(wanted, str) else wanted) if w.strip()]
    if not names:
        msg = "no column named; give names separated by commas (e.g. cutout_id,ra_deg,dec_deg,cnn_label)"
        raise SurveyClassifierError(msg)
    chosen: list[str] = []
    for name in names:
        matches = [c for c in table.colnames if fnmatch.fnmatchcase(c, name)] if _is_pattern(name) else (
            [name] if name in table.colnames else [])
        if not matches:
            msg = f"no column {name!r} in these results; columns are: {', '.join(table.colnames)}"
            raise SurveyClassifierError(msg)
        chosen.extend(m for m in matches if m not in chosen)
    return table[chosen]


def _is_pattern(name: str) -> bool:
    return any(character in name for character in "*?[")


def order_columns(names: Iterable[str], first: Sequence[str]) -> list[str]:
    """``names`` with those matching the patterns of ``first`` moved to the front, in that order."""
    return list(_ordered(tuple(names), tuple(first)))


@lru_cache(maxsize=256)
def _ordered(names: tuple[str, ...], first: tuple[str, ...]) -> tuple[str, ...]:
    """:func:`order_columns` of one list of names (a query's columns repeat from request to request)."""
    front: list[str] = []
    for pattern in first:
        front.extend(n for n in names if fnmatch.fnmatchcase(n, pattern) and n not in front)
    return (*front, *(n for n in names if n not in front))

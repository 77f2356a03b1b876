"""A light table of a query's answer: the columns an astropy ``Table`` would hold, as Python lists.

Building an astropy :class:`~astropy.table.Table` (a ``Column`` object per
column, its ``info`` set attribute by attribute, a copy on every column
selection) cost about two thirds of a ``/results`` request, and numpy
arrays made from the database's Python values only to be turned back
into Python values for JSON cost most of the rest. A JSON answer needs
only each column's values and its description, so
:func:`survey_classifier.query.query_results` fills a :class:`Frame` of
:class:`FrameColumn` (Python values, ``None`` where missing) and the
service encodes its rows directly; the astropy table is made from it
(:meth:`Frame.to_table`) for the exports (VOTable, FITS, ECSV) and the CLI.

One rule turns a list of values into a column (:func:`frame_column`), the
rule the astropy path always used: all booleans stay booleans, all integers
integers, integers mixed with floats become floats, anything else becomes
text; a missing value is masked. :meth:`FrameColumn.array` gives the numpy
(masked) array of that rule, so both paths show the same values.

A :class:`Frame` offers the part of the ``Table`` interface the query, the
label columns, :func:`survey_classifier.columns.columns_block`,
:func:`~survey_classifier.columns.select_columns` and the service's
:func:`~survey_classifier.api._public.public_table` use; each column carries
an ``info`` with ``unit``, ``description``, ``format`` and ``meta``, set by
:func:`survey_classifier.columns.annotate`.
"""

from __future__ import annotations

import math

import numpy as np
from astropy.table import MaskedColumn, Table

__all__ = ["Frame", "FrameColumn", "frame_column"]

#: numpy dtype of each kind of column (the dtype ``kind`` letter).
_DTYPES = {"b": np.dtype(bool), "i": np.dtype(np.int64), "f": np.dtype(np.float64), "U": np.dtype(str)}
#: What a masked value holds in the numpy array of each kind.
_FILL = {"b": False, "i": 0, "f": np.nan, "U": ""}
_NONE = type(None)


class _Info:
    """What :func:`~survey_classifier.columns.annotate` sets on a column and the writers read."""

    __slots__ = ("unit", "description", "format", "meta")

    def __init__(self):
        self.unit = None
        self.description = None
        self.format = None
        self.meta = {}


class FrameColumn:
    """One column: its values (Python objects, ``None`` where missing), their kind and description.

    ``kind`` is the numpy dtype kind of the astropy column the values make:
    ``b`` (bool), ``i`` (int64), ``f`` (float64; NaN stays NaN here and is
    ``null`` in JSON), ``U`` (text).
    """

    __slots__ = ("values", "kind", "info", "_array", "_none_given")

    def __init__(self, values: list, kind: str, array=None, *, none_given: bool = False):
        self.values = values
        self.kind = kind
        self.info = _Info()
        self._array = array
        self._none_given = none_given  # no value at all: the kind is a guess, every entry masked

    @property
    def dtype(self) -> np.dtype:
        dtype = _DTYPES.get(self.kind)
        return self._array.dtype if dtype is None else dtype

    def __len__(self) -> int:
        return len(self.values)

    def __iter__(self):
        return iter(self.values)

    def __getitem__(self, index):
        return self.values[index]

    def array(self):
        """The numpy array of these values; a ``MaskedColumn`` where any is missing."""
        if self._array is None:
            values = self.values
            if self._none_given:
                empty = np.full(len(values), "", dtype=str) if self.kind == "U" else np.zeros(len(values))
                self._array = MaskedColumn(empty, mask=[True] * len(values))
            else:
                fill = _FILL[self.kind]
                mask = [v is None for v in values]
                data = np.array([fill if v is None else v for v in values], dtype=_DTYPES[self.kind])
                self._array = MaskedColumn(data, mask=mask) if any(mask) else data
        return self._array


def _by_instance(values: list) -> FrameColumn:
    """The rule of :func:`frame_column` for values of other types than Python's own (numpy scalars ...)."""
    present = [v for v in values if v is not None]
    if all(isinstance(v, bool) for v in present):
        kind = "b"
    elif all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        kind = "i"
    elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        kind = "f"
    else:
        kind = "U"
        values = [v if isinstance(v, str) or v is None else str(v) for v in values]
    column = FrameColumn(values, kind, none_given=not present)
    array = column.array()  # the values as numpy holds them (a numpy float as a Python float ...)
    shown = np.ma.getdata(array).tolist()
    column.values = [None if v is None else s for v, s in zip(values, shown)]
    return column


def frame_column(values: list, *, text: bool = False) -> FrameColumn:
    """A column from Python values, missing where None (text when ``text`` and all are None)."""
    types = set(map(type, values))
    types.discard(_NONE)
    if not types:
        return FrameColumn(values, "U" if text else "f", none_given=True)
    if types == {bool}:
        return FrameColumn(values, "b")
    if types == {int}:
        return FrameColumn(values, "i")
    if types == {float}:
        return FrameColumn(values, "f")
    if types == {int, float}:
        return FrameColumn([v if v is None else float(v) for v in values], "f")
    if types == {str}:
        return FrameColumn(values, "U")
    if types <= {str, bool, int, float}:
        return FrameColumn([v if v is None or type(v) is str else str(v) for v in values], "U")
    return _by_instance(values)


def _from_array(data) -> FrameColumn:
    """A column from a numpy (masked) array or an astropy column, as it is."""
    kind = data.dtype.kind
    values = np.ma.getdata(data).tolist()
    if kind == "S":
        values = [v.decode("utf-8", "replace") for v in values]
    mask = np.ma.getmask(data)
    if mask is not np.ma.nomask and mask.any():
        values = [None if masked else v for v, masked in zip(values, mask.tolist())]
    return FrameColumn(values, kind, array=data)


def finite(value):
    """``value``, or None for a float that is NaN or infinite (JSON has neither)."""
    return None if type(value) is float and not math.isfinite(value) else value


class Frame:
    """Named columns of equal length, in order."""

    def __init__(self, columns: dict[str, FrameColumn] | None = None):
        self._columns: dict[str, FrameColumn] = dict(columns or {})

    @property
    def colnames(self) -> list[str]:
        return list(self._columns)

    def __len__(self) -> int:
        for column in self._columns.values():
            return len(column)
        return 0

    def __setitem__(self, name: str, data) -> None:
        self._columns[name] = data if isinstance(data, FrameColumn) else _from_array(data)

    def __getitem__(self, key):
        if isinstance(key, str):
            return self._columns[key]
        if isinstance(key, (list, tuple)):
            return Frame({n: self._columns[n] for n in key})
        msg = f"a Frame is indexed by a column name or a list of names, not {key!r}"
        raise TypeError(msg)

    def replace_column(self, name: str, data, copy: bool = False) -> None:  # copy: as astropy names it; never copied
        self[name] = data

    def remove_column(self, name: str) -> None:
        del self._columns[name]

    def add_column(self, data, name: str, index: int | None = None) -> None:
        items = list(self._columns.items())
        at = len(items) if index is None else index
        items.insert(at, (name, data if isinstance(data, FrameColumn) else _from_array(data)))
        self._columns = dict(items)

    def head(self, n: int) -> Frame:
        """The first ``n`` rows (each column's numpy array sliced, as astropy slices a table)."""
        columns = {}
        for name, column in self._columns.items():
            part = FrameColumn(column.values[:n], column.kind, column.array()[:n])
            part.info = column.info
            columns[name] = part
        return Frame(columns)

    def rows(self, *, finite_only: bool = True) -> list[dict]:
        """One dict per row; NaN and infinities as None unless ``finite_only`` is False (an encoder that writes
        them as null, as orjson does, needs no pass over the values)."""
        names = self.colnames
        columns = []
        for column in self._columns.values():
            values = column.values
            if finite_only and column.kind == "f":
                values = [finite(v) for v in values]
            columns.append(values)
        return [dict(zip(names, row)) for row in zip(*columns)]

    def to_table(self) -> Table:
        """The astropy table of these columns, each with its unit, description, format and UCD."""
        names = self.colnames
        if not names:
            return Table()
        table = Table([self._columns[n].array() for n in names], names=names, copy=False)
        for name in names:
            info, target = self._columns[name].info, table[name].info
            target.unit = info.unit
            target.description = info.description
            if info.format is not None:
                target.format = info.format
            meta = target.meta  # changed in place, as annotate does
            meta.clear()
            meta.update(info.meta)
        return table

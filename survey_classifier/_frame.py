"""A light table of a query's answer: the columns an astropy ``Table`` would hold, without building one.

Building an astropy :class:`~astropy.table.Table` (a ``Column`` object per
column, its ``info`` set attribute by attribute, a copy on every column
selection) cost about two thirds of a ``/results`` request. A JSON answer
needs only each column's values and its description, so
:func:`survey_classifier.query.query_results` fills a :class:`Frame` and
the service encodes it directly; the astropy table is made from it
(:meth:`Frame.to_table`) for the exports (VOTable, FITS, ECSV) and the CLI.

A :class:`Frame` offers the part of the ``Table`` interface the query, the
label columns, :func:`survey_classifier.columns.columns_block`,
:func:`~survey_classifier.columns.select_columns` and the service's
:func:`~survey_classifier.api._public.public_table` use; each column is a
masked array carrying an ``info`` with ``unit``, ``description``,
``format`` and ``meta``, set by :func:`survey_classifier.columns.annotate`.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

__all__ = ["Frame", "FrameColumn"]


class _Info:
    """What :func:`~survey_classifier.columns.annotate` sets on a column and the writers read."""

    __slots__ = ("unit", "description", "format", "meta")

    def __init__(self):
        self.unit = None
        self.description = None
        self.format = None
        self.meta = {}


class FrameColumn(np.ma.MaskedArray):
    """A masked array with an ``info`` (no mask costs nothing: ``nomask``)."""

    info: _Info


def _frame_column(data) -> FrameColumn:
    # plain ndarray data (an astropy column's own class would come back through numpy's views)
    column = FrameColumn(np.asarray(np.ma.getdata(data)).view(np.ndarray), mask=np.ma.getmask(data))
    column.info = _Info()
    return column


class Frame:
    """Named columns of equal length, in order."""

    def __init__(self, columns: dict[str, FrameColumn] | None = None, originals: dict | None = None):
        self._columns: dict[str, FrameColumn] = dict(columns or {})
        self._originals: dict = dict(originals or {})  # what was assigned, for the astropy table

    @property
    def colnames(self) -> list[str]:
        return list(self._columns)

    def __len__(self) -> int:
        for column in self._columns.values():
            return len(column)
        return 0

    def __setitem__(self, name: str, data) -> None:
        self._columns[name] = _frame_column(data)
        self._originals[name] = data

    def __getitem__(self, key):
        if isinstance(key, str):
            return self._columns[key]
        if isinstance(key, (list, tuple)):
            return Frame({n: self._columns[n] for n in key}, {n: self._originals[n] for n in key})
        msg = f"a Frame is indexed by a column name or a list of names, not {key!r}"
        raise TypeError(msg)

    def replace_column(self, name: str, data, copy: bool = False) -> None:  # copy: as astropy names it; never copied
        self._columns[name] = _frame_column(data)
        self._originals[name] = data

    def remove_column(self, name: str) -> None:
        del self._columns[name]
        del self._originals[name]

    def add_column(self, data, name: str, index: int | None = None) -> None:
        items = list(self._columns.items())
        at = len(items) if index is None else index
        items.insert(at, (name, _frame_column(data)))
        self._columns = dict(items)
        self._originals[name] = data

    def to_table(self) -> Table:
        """The astropy table of these columns, each with its unit, description, format and UCD."""
        names = self.colnames
        if not names:
            return Table()
        table = Table([self._originals[n] for n in names], names=names, copy=False)
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

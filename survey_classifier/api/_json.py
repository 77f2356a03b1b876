"""JSON answers encoded by orjson: a page of a thousand rows in a millisecond, not tens of them.

:class:`FastJSONResponse` is the service's JSON response for values that
are plain already (Python numbers, strings, None, lists and dicts of
them): it skips FastAPI's per-value encoder and Python's ``json`` module.
orjson writes NaN and the infinities as ``null``, as the rows of
:mod:`survey_classifier.api._tables` ask. Where orjson is not installed,
the same bytes come from ``json`` (slower; the rows are then made finite
first: :data:`WRITES_NAN_AS_NULL` says which).
"""

from __future__ import annotations

import json
import math

from fastapi.responses import JSONResponse

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency; a broken install still answers
    orjson = None

__all__ = ["FastJSONResponse", "WRITES_NAN_AS_NULL", "dumps"]

#: Whether :func:`dumps` writes NaN and infinities as null itself (so rows need no pass over their values).
WRITES_NAN_AS_NULL = orjson is not None


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def dumps(content) -> bytes:
    """``content`` as compact UTF-8 JSON; NaN and infinities as null."""
    if orjson is not None:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    return json.dumps(_finite(content), ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


class FastJSONResponse(JSONResponse):
    """A JSON response encoded by :func:`dumps`."""

    def render(self, content) -> bytes:
        return dumps(content)

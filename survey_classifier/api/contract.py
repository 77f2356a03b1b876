"""The published contract of the service: one error body, and every status and media type documented.

Every refusal, whatever raised it (a parameter outside its range, a filter
naming nothing stored, a missing token, an unknown id, an unknown path),
answers ``{"detail": "one sentence naming what was wrong"}``
(:class:`ErrorBody`); :func:`install_error_handlers` makes FastAPI's and
Starlette's own refusals take that shape too. Routes document the statuses
they can answer with :func:`errors` and the media types of table downloads
with :func:`table_responses`, so the OpenAPI schema at ``/openapi.json``
holds every answer the service gives (checked by schemathesis in
``tests/api/test_contract.py``).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from survey_classifier.errors import SurveyClassifierError
from survey_classifier.formats import EXPORT_FORMATS
from survey_classifier.positions import PositionError

__all__ = ["ErrorBody", "errors", "table_responses", "install_error_handlers", "media_type"]


class ErrorBody(BaseModel):
    """The body of every refusal."""

    detail: str


_MEANING = {
    400: "The request is well formed but names something the database does not hold, or asks what cannot be "
         "answered (the message says what is stored).",
    401: "The endpoint changes the database: it needs 'Authorization: Bearer TOKEN' with the service's token.",
    403: "The service is read-only (started without a write token).",
    404: "No such cutout, model or file.",
    409: "The cutout's file changed since it was classified (its checksum differs).",
    422: "A parameter is malformed or outside its range; the message names it.",
}


def errors(*statuses: int) -> dict:
    """``responses=`` documenting the refusals a route can answer, each with :class:`ErrorBody`."""
    return {status: {"model": ErrorBody, "description": _MEANING[status]} for status in statuses}


def media_type(full: str) -> str:
    """The media type without parameters (``text/csv; charset=utf-8`` -> ``text/csv``)."""
    return full.split(";", 1)[0].strip()


def table_responses(json_schema: type[BaseModel]) -> dict:
    """``responses=`` of a route answering JSON (``json_schema``) or any export format."""
    content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{json_schema.__name__}"}}}
    for export in EXPORT_FORMATS.values():
        schema = {"type": "string"} if export.text else {"type": "string", "format": "binary"}
        content[media_type(export.media_type)] = {"schema": schema}
    return {200: {"content": content, "description": "JSON, or a table file with format=" + "|".join(EXPORT_FORMATS)}}


def _refusal(status: int, detail: str, headers=None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail}, headers=headers)


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        location = [str(part) for part in error.get("loc", ()) if part not in ("query", "path", "header", "body")]
        parts.append(f"{'.'.join(location) or 'request'}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """Every refusal of ``app`` answers :class:`ErrorBody`."""

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException):
        return _refusal(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError):
        return _refusal(422, _validation_detail(exc))

    @app.exception_handler(PositionError)
    async def _position(_request: Request, exc: PositionError):
        return _refusal(422, str(exc))

    @app.exception_handler(SurveyClassifierError)
    async def _refused(_request: Request, exc: SurveyClassifierError):
        return _refusal(400, str(exc))

"""The published contract of the service: one error body, and every status and media type documented.

Every refusal, whatever raised it (a parameter outside its range, a filter
naming nothing stored, a missing token, an unknown id, an unknown path),
answers ``{"detail": "one sentence naming what was wrong"}``
(:class:`ErrorBody`). The statuses keep one meaning: 422 when the request
does not fit the published schema (a number out of its range, a value
outside its pattern); 400 when it fits but cannot be answered (a position
that is not an angle, a filter naming nothing the database holds, two
parameters that contradict each other: what a schema cannot say); 401/403
for the token; 404 for an unknown id; 409 for a changed file. :func:`install_error_handlers` makes FastAPI's and
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

from survey_classifier.api._public import public_text
from survey_classifier.errors import SurveyClassifierError
from survey_classifier.formats import EXPORT_FORMATS

__all__ = ["ErrorBody", "errors", "table_responses", "install_error_handlers", "media_type"]


class ErrorBody(BaseModel):
    """The body of every refusal."""

    detail: str


_MEANING = {
    400: "The request fits the schema but cannot be answered: a position that is not an angle, a filter naming "
         "nothing the database holds (the message says what is stored), parameters that contradict each other.",
    401: "The endpoint changes the database: it needs 'Authorization: Bearer TOKEN' with the service's token.",
    403: "The service is read-only (started without a write token).",
    404: "No such cutout, model or file.",
    409: "The cutout's file changed since it was classified (its checksum differs).",
    422: "The request does not fit the schema: a parameter is malformed or outside its range (the message names it).",
    503: "The server is drawing as many pictures as it can at once: try again after Retry-After seconds.",
}


def errors(*statuses: int) -> dict:
    """``responses=`` documenting the refusals a route can answer, each with :class:`ErrorBody`."""
    return {status: {"model": ErrorBody, "description": _MEANING[status]} for status in statuses}


def media_type(full: str) -> str:
    """The media type without parameters (``text/csv; charset=utf-8`` -> ``text/csv``)."""
    return full.split(";", 1)[0].strip()


def table_responses(json_schema: type[BaseModel]) -> dict:
    """``responses=`` of a route answering JSON (``json_schema``) or any export format."""
    content = {}
    for export in EXPORT_FORMATS.values():
        schema = {"type": "string"} if export.text else {"type": "string", "format": "binary"}
        content[media_type(export.media_type)] = {"schema": schema}
    return {200: {"model": json_schema, "content": content,
                  "description": "JSON, or a table file with format=" + "|".join(EXPORT_FORMATS)}}


def _refusal(status: int, detail: str, headers=None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail}, headers=headers)


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        location = [str(part) for part in error.get("loc", ()) if part not in ("query", "path", "header", "body")]
        parts.append(f"{'.'.join(location) or 'request'}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _methods_of(app: FastAPI, scope: dict) -> list[str]:
    """Every method some route of ``app`` answers at the path of ``scope``."""
    from starlette.routing import Match

    methods = []
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        probe = {**scope, "method": method}
        if any(route.matches(probe)[0] == Match.FULL for route in app.router.routes):
            methods.append(method)
    return methods


def install_error_handlers(app: FastAPI) -> None:
    """Every refusal of ``app`` answers :class:`ErrorBody`."""

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:  # Starlette names the methods of one route; a path may have several
            headers = {**(headers or {}), "Allow": ", ".join(_methods_of(app, request.scope))}
        return _refusal(exc.status_code, public_text(str(exc.detail)), headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError):
        return _refusal(422, _validation_detail(exc))

    @app.exception_handler(SurveyClassifierError)
    async def _refused(_request: Request, exc: SurveyClassifierError):
        return _refusal(400, public_text(str(exc)))

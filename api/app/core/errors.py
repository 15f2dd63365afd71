"""One JSON shape for every 4xx/5xx answer, and the OpenAPI entries that document it.

    {"error": "invalid_request", "error_description": "…", "status": 422,
     "request_id": "…", "errors": [{"field": "from", "location": "query", "message": "…"}]}

`error`/`error_description` are RFC 6749/6750's names, so the token endpoint's OAuth
errors and the bearer-token refusals are this same shape.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("fluxo.api.errors")

# Default error code of a status when the raiser gave none.
STATUS_CODES = {
    400: "invalid_request", 401: "invalid_token", 403: "insufficient_scope", 404: "not_found",
    405: "method_not_allowed", 406: "not_acceptable", 413: "payload_too_large", 415: "unsupported_media_type",
    422: "invalid_request", 429: "too_many_requests", 431: "request_header_fields_too_large",
    500: "server_error", 503: "temporarily_unavailable",
}


class FieldError(BaseModel):
    field: str = Field(description="The offending parameter or body field")
    location: str = Field(description="query, path, header, body or form")
    message: str


class ErrorBody(BaseModel):
    """Every error of the API (and OAuth2's token errors) has this shape."""

    error: str = Field(description="Machine-readable code (RFC 6749/6750 names where they exist)")
    error_description: str
    status: int
    request_id: str | None = None
    errors: list[FieldError] = Field(default_factory=list)


class ApiError(Exception):
    """Raise to answer with an ErrorBody."""

    def __init__(self, status: int, description: str, error: str | None = None,
                 headers: dict[str, str] | None = None, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.error = error or STATUS_CODES.get(status, "error")
        self.headers = headers or {}
        self.errors = errors or []


def invalid(field: str, message: str, location: str = "query") -> ApiError:
    """A 422 that names the field."""
    return ApiError(422, f"{field}: {message}", "invalid_request",
                    errors=[{"field": field, "location": location, "message": message}])


def error_response(request: Request | None, status: int, description: str, error: str | None = None,
                   headers: dict[str, str] | None = None, errors: list[dict[str, str]] | None = None,
                   request_id: str | None = None) -> JSONResponse:
    if request is not None:
        request_id = request.scope.get("state", {}).get("request_id")
    body = ErrorBody(error=error or STATUS_CODES.get(status, "error"), error_description=description,
                     status=status, request_id=request_id, errors=[FieldError(**e) for e in errors or []])
    if request is not None:
        from app.core.audit import note

        if not request.scope.get("state", {}).get("audit_detail", {}).get("reason"):
            note(request, reason=description)
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _loc(loc: tuple[Any, ...]) -> tuple[str, str]:
    location = str(loc[0]) if loc else "query"
    field = ".".join(str(p) for p in loc[1:]) or location
    return location, field


async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = []
    for item in exc.errors():
        location, field = _loc(tuple(item.get("loc", ())))
        errors.append({"field": field, "location": location, "message": str(item.get("msg", "invalid"))})
    description = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid request"
    return error_response(request, 422, description, "invalid_request", errors=errors)


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(request, exc.status, exc.description, exc.error, exc.headers, exc.errors)


async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    description = exc.detail if isinstance(exc.detail, str) else STATUS_CODES.get(exc.status_code, "error")
    return error_response(request, exc.status_code, description, None, getattr(exc, "headers", None))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", extra={"fields": {"request_id": request.scope.get("state", {}).get("request_id")}})
    return error_response(request, 500, "internal error; the request id is in the log", "server_error")


def install(app) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)


def _doc(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


RANGE_RULES = ("`from` must not be after `to`, and the window spans at most 366 days (both ends included; "
               "FLUXO_API_MAX_RANGE_DAYS)")
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _doc("Missing, expired, malformed or untrusted bearer token (`WWW-Authenticate: Bearer error=\"invalid_token\"`)"),
    403: _doc("The token lacks the resource's scope (`error=\"insufficient_scope\"`)"),
    422: _doc("A parameter is invalid; `errors[].field` names it. Integers are bounded, NUL bytes and "
              f"oversized strings are refused. {RANGE_RULES}"),
    429: _doc("Too many requests; retry after `Retry-After` seconds"),
    431: _doc("Request headers over FLUXO_API_MAX_HEADER_BYTES (16 KB)"),
    503: _doc("The warehouse or the lake does not answer (or every pooled connection is busy); retry later"),
}


def responses(*extra: int) -> dict[int | str, dict[str, Any]]:
    """The documented error answers of an authenticated route, plus `extra` statuses."""
    more = {404: _doc("No such resource"), 400: _doc("Malformed request"),
            406: _doc("The Accept header asks for a format this route does not produce")}
    return {**AUTH_RESPONSES, **{code: more[code] for code in extra}}

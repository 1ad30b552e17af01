"""Domain errors carry their HTTP status; one handler turns them (and bad input) into responses."""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException

log = logging.getLogger(__name__)

# A 10,000-record batch can be wrong everywhere: the answer names the first ones only.
MAX_REPORTED_ERRORS = 100


class ApiError(Exception):
    """Base of the errors a client can be told about; `status` and `code` travel with the class."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class ModelNotReady(ApiError):
    """Nothing is served: no Production version, it cannot be loaded, or the registry is unreachable."""

    status = 503
    code = "model_not_ready"


class BatchTooLarge(ApiError):
    """More records than MAX_BATCH_SIZE."""

    status = 413
    code = "batch_too_large"


class InvalidApiKey(ApiError):
    """X-API-Key missing or wrong on a protected route."""

    status = 401
    code = "invalid_api_key"


# Errors raised by Starlette/FastAPI themselves; 413 is Starlette's limiter on a streamed body.
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}


def body_too_large_detail(limit: int | None) -> str:
    """What a 413 says: the limit and the setting behind it."""
    return f"request body larger than {limit} bytes (MAX_BODY_BYTES)"


def error_response(
    status: int,
    code: str,
    detail: str,
    fields: list[dict] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """The one error body shape (schemas.ErrorResponse)."""
    body = {"error": code, "detail": detail}
    if fields is not None:
        body["fields"] = fields
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "X-API-Key"}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _field_name(loc: tuple) -> str:
    # ("body", "records", 3, "age") -> "records[3].age"; the leading "body" says nothing to a client.
    parts = [p for p in loc if p != "body"]
    name = ""
    for p in parts:
        name += f"[{p}]" if isinstance(p, int) else (f".{p}" if name else str(p))
    return name or "body"


def _describe(errors: list[dict]) -> list[dict[str, str]]:
    fields = []
    for e in errors:
        if e.get("type") == "json_invalid":
            msg = f"not valid JSON: {e.get('ctx', {}).get('error', 'decode error')}"
            fields.append({"field": "body", "message": msg})
        elif e.get("type") in ("model_attributes_type", "model_type") and tuple(e.get("loc", ())) == (
            "body",
        ):
            # FastAPI hands the raw bytes over when the Content-Type is not JSON.
            fields.append(
                {"field": "body", "message": "expected a JSON object (Content-Type: application/json)"}
            )
        elif e.get("type") == "extra_forbidden":
            fields.append({"field": _field_name(tuple(e["loc"])), "message": "unknown field"})
        else:
            fields.append({"field": _field_name(tuple(e["loc"])), "message": e.get("msg", "invalid")})
    return fields


async def _api_error_handler(_: Request, exc: ApiError) -> Response:
    # An error may name fields, as a 422 does (the outcomes route names unknown prediction ids).
    return error_response(exc.status, exc.code, exc.detail, getattr(exc, "fields", None))


async def _validation_handler(_: Request, exc: RequestValidationError) -> Response:
    fields = _describe(list(exc.errors())[:MAX_REPORTED_ERRORS])
    shown = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5])
    more = f" (and {len(fields) - 5} more)" if len(fields) > 5 else ""
    return error_response(422, "invalid_input", f"{shown}{more}", fields)


def _unparsable_json(cause: BaseException | None) -> str | None:
    # FastAPI's json.loads fails with these, not a JSONDecodeError, and FastAPI then answers a
    # bare 400: a body nested thousands deep, or an integer literal of thousands of digits.
    if isinstance(cause, RecursionError):
        return "nested too deeply"
    if isinstance(cause, ValueError):
        return str(cause).split(":")[0]
    return None


async def _http_error_handler(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 400 and (reason := _unparsable_json(exc.__cause__)):
        message = f"not valid JSON: {reason}"
        return error_response(
            422, "invalid_input", f"body: {message}", [{"field": "body", "message": message}]
        )
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    detail = str(exc.detail)
    if exc.status_code == 413:
        detail = body_too_large_detail(request.app.max_body_size)
    return error_response(exc.status_code, code, detail, headers=exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Map domain errors, request validation errors and HTTP errors to the one JSON error shape."""
    app.add_exception_handler(ApiError, _api_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(HTTPException, _http_error_handler)

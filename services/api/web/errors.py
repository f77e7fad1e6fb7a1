"""API errors: one shape, ``{"error": {"code", "message", "fields"?}}``, with the
HTTP status that means it. Domain code raises these; the middleware renders them."""

from __future__ import annotations

import json
import logging

from aiohttp import web
from aiohttp.typedefs import Handler

log = logging.getLogger(__name__)


class ApiError(Exception):
    status = 400
    code = "bad_request"

    def __init__(
        self, message: str, *, fields: dict[str, str] | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or {}
        if code is not None:
            self.code = code

    def body(self) -> dict[str, object]:
        error: dict[str, object] = {"code": self.code, "message": self.message}
        if self.fields:
            error["fields"] = self.fields
        return {"error": error}


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class ValidationFailed(ApiError):
    status, code = 422, "validation_failed"


class TooManyRequests(ApiError):
    status, code = 429, "too_many_requests"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = max(1, retry_after_s)


class ServiceUnavailable(ApiError):
    status, code = 503, "service_unavailable"


def not_found(what: str) -> NotFound:
    """The same answer whether the thing does not exist or belongs to someone else."""
    return NotFound(f"{what} not found")


def error_response(error: ApiError) -> web.Response:
    response = web.json_response(error.body(), status=error.status)
    if isinstance(error, TooManyRequests):
        response.headers["Retry-After"] = str(error.retry_after_s)
    if isinstance(error, Unauthorized):
        response.headers["WWW-Authenticate"] = 'Bearer realm="backupmanager"'
    return response


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "too_many_requests",
}


def _http_exception_response(exc: web.HTTPException) -> web.StreamResponse:
    if exc.status < 400:
        raise exc
    code = _HTTP_CODES.get(exc.status, "http_error")
    message = exc.reason
    if exc.status == 413:
        message = "Request body too large"
    response = web.json_response({"error": {"code": code, "message": message}}, status=exc.status)
    for header in ("Allow", "Retry-After"):
        if header in exc.headers:
            response.headers[header] = exc.headers[header]
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error of an ``/api`` path answers in the one shape; unexpected errors
    are logged with their traceback and shown as a generic 500."""
    if not request.path.startswith("/api/"):
        return await handler(request)
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        return _http_exception_response(exc)
    except json.JSONDecodeError:
        return error_response(BadRequest("Request body is not valid JSON"))
    except Exception:
        log.exception("unexpected error in %s %s", request.method, request.path)
        return web.json_response(
            {"error": {"code": "internal_error", "message": "Internal error; see the server log"}},
            status=500,
        )

"""The pages' middleware: who the visitor is, CSRF on every unsafe request, flash
messages, and every failure as a page a person can act on (never a traceback)."""

from __future__ import annotations

import logging
from urllib.parse import quote

from aiohttp import web
from aiohttp.typedefs import Handler

from services.api.context import API
from services.api.pages.common import back, error_page, redirect
from services.api.pages.csrf import CsrfRejected, check_csrf, remember_anon_cookie
from services.api.pages.flash import apply_flashes, flash, read_flashes
from services.api.pages.render import SECURITY_HEADERS
from services.api.pages.session import SESSION_COOKIE, VISITOR, clear_session_cookie, load_visitor
from services.api.web.errors import ApiError, Forbidden, NotFound, Unauthorized

log = logging.getLogger(__name__)

NOT_PAGES = ("/api/", "/static/")
NOT_PAGE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
PUBLIC_PATHS = frozenset({"/login"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
TITLES = {
    400: "Bad request",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Too large",
    422: "Invalid input",
    429: "Too many attempts",
    503: "Temporarily unavailable",
}


def is_page(path: str) -> bool:
    return not path.startswith(NOT_PAGES) and path not in NOT_PAGE_PATHS


@web.middleware
async def pages_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not is_page(request.path):
        return await handler(request)
    if API not in request.app:
        return web.Response(
            text="BackupManager is starting; reload in a moment.",
            status=503,
            headers={"Retry-After": "2"},
        )
    ctx = request.app[API]
    request[VISITOR] = await load_visitor(ctx, request.cookies.get(SESSION_COOKIE), ctx.clock())
    read_flashes(request)
    response = await _handle(request, handler)
    if request.method not in SAFE_METHODS:
        await ctx.changed()  # a change here applies to the API's next request
    if not response.prepared:
        apply_flashes(request, response)
        remember_anon_cookie(request, response)
        if request.cookies.get(SESSION_COOKIE) and request.get(VISITOR) is None:
            clear_session_cookie(response)  # an ended session: forget the cookie
    return response


async def _handle(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        if request.method not in SAFE_METHODS:
            await check_csrf(request)
        if request.get(VISITOR) is None and request.path not in PUBLIC_PATHS:
            return _to_login(request)
        return await handler(request)
    except CsrfRejected:
        return error_page(
            request,
            403,
            "Form expired",
            "This form has expired or was not sent from a BackupManager page, so nothing "
            "was changed.",
            hint="Go back, reload the page and send the form again.",
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            return web.Response(status=exc.status, headers=exc.headers)
        if exc.status == 404:
            return error_page(request, 404, "Not found", "There is no page at this address.")
        return error_page(request, exc.status, TITLES.get(exc.status, "Error"), exc.reason)
    except ApiError as exc:
        return _api_error(request, exc)
    except Exception:
        log.exception("unexpected error in %s %s", request.method, request.path)
        return error_page(
            request,
            500,
            "Something went wrong",
            "The server could not complete this request. The error was logged.",
            hint="Try again; if it keeps happening, give an administrator the request id below.",
        )


def _to_login(request: web.Request) -> web.StreamResponse:
    if request.method in SAFE_METHODS:
        target = request.path_qs
        suffix = "" if target == "/" else f"?next={quote(target, safe='/')}"
        return redirect(f"/login{suffix}")
    flash(request, "warning", "Your session has ended; log in again.")
    return redirect("/login")


def _api_error(request: web.Request, exc: ApiError) -> web.StreamResponse:
    if isinstance(exc, Unauthorized):
        request[VISITOR] = None
        flash(request, "warning", f"Please log in again ({exc.message}).")
        return redirect("/login")
    if request.method in SAFE_METHODS or (isinstance(exc, NotFound) and not exc.fields):
        status = exc.status
        title = TITLES.get(status, "Error")
        if isinstance(exc, Forbidden):
            title = "Not allowed"
        return error_page(request, status, title, _sentence(exc.message))
    text = _sentence(exc.message)
    if exc.fields:
        text += " " + "; ".join(f"{name}: {why}" for name, why in exc.fields.items())
    flash(request, "error", text)
    return redirect(back(request))


def _sentence(message: str) -> str:
    return message[:1].upper() + message[1:] if message else "Something went wrong."


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: page responses get a strict CSP and friends."""
    if is_page(request.path) or request.path.startswith("/static/"):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
    if request.path.startswith("/static/") and "v" in request.query:
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
    elif is_page(request.path):
        response.headers.setdefault("Cache-Control", "no-store")

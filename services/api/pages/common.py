"""Small helpers every page handler uses."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

from aiohttp import web

from services.api.auth.principal import Principal
from services.api.context import API, ApiContext
from services.api.pages.render import render
from services.api.pages.session import VISITOR, Visitor
from services.api.web.errors import NotFound, Unauthorized
from services.api.web.pagination import DEFAULT_LIMIT, PageQuery
from services.common.logs import request_id

PAGE_SIZE = 25


def context(request: web.Request) -> ApiContext:
    return request.app[API]


def visitor(request: web.Request) -> Visitor:
    found: Visitor | None = request.get(VISITOR)
    if found is None:
        raise Unauthorized("log in first")
    return found


def principal(request: web.Request) -> Principal:
    return visitor(request).principal


def path_uuid(request: web.Request, name: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info[name])
    except (KeyError, ValueError):
        raise NotFound(f"{what} not found") from None


def query_uuid(request: web.Request, name: str) -> uuid.UUID | None:
    """An optional UUID query parameter (anything else counts as not given)."""
    try:
        return uuid.UUID(request.query.get(name, ""))
    except ValueError:
        return None


def page_query(request: web.Request, limit: int = PAGE_SIZE) -> PageQuery:
    cursor = request.query.get("cursor") or None
    return PageQuery(limit=limit or DEFAULT_LIMIT, cursor=cursor[:512] if cursor else None)


def redirect(location: str) -> web.Response:
    """See other: after a form, the browser gets the next page (post, redirect, get)."""
    return web.Response(status=303, headers={"Location": location})


def safe_next(target: str | None, fallback: str = "/") -> str:
    """A local path to go to after a form (never another site)."""
    if not target:
        return fallback
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/") or target.startswith("//"):
        return fallback
    if "\\" in target or any(ord(c) < 32 for c in target):
        return fallback
    return target


def back(request: web.Request, fallback: str = "/") -> str:
    """Where the visitor came from, if it was one of our pages."""
    referer = request.headers.get("Referer", "")
    parts = urlsplit(referer)
    if not referer or parts.netloc != request.host:
        return fallback
    return safe_next(parts.path + (f"?{parts.query}" if parts.query else ""), fallback)


def confirm_page(
    request: web.Request,
    *,
    title: str,
    message: str,
    action: str,
    button: str,
    cancel: str,
    details: list[tuple[str, str]] | None = None,
) -> web.Response:
    """The "are you sure?" page before a deletion: the form posts to ``action``."""
    return render(request, "confirm.html", {
        "title": title, "message": message, "details": details, "action": action,
        "button": button, "cancel": cancel,
    })  # fmt: skip


def error_page(
    request: web.Request, status: int, title: str, message: str, *, hint: str | None = None
) -> web.Response:
    return render(
        request,
        "error.html",
        {
            "status": status,
            "title": title,
            "message": message,
            "hint": hint,
            "request_id": request_id.get(),
        },
        status=status,
    )

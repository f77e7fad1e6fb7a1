"""CSRF protection: every form carries a token bound to the visitor's session.

The token is an HMAC (keyed with the service's JWT secret) of the session's id, so
it needs no storage, changes with every login and dies with the session. Before
login (the login form) it is bound instead to a random ``bm_csrf`` cookie: a
double-submit token that another site can neither read nor set. Every unsafe request
to a page must carry the token in the ``csrf_token`` form field (or the
``X-CSRF-Token`` header); anything else is refused with a 403 page.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from aiohttp import web

from services.api.context import API
from services.api.pages.session import VISITOR, is_secure

FIELD = "csrf_token"
HEADER = "X-CSRF-Token"
ANON_COOKIE = "bm_csrf"
_NEW_ANON: web.RequestKey[str] = web.RequestKey("bm_new_anon_csrf")
_ANON_LENGTH = 32


class CsrfRejected(Exception):
    """The request's CSRF token is missing or wrong."""


def _sign(request: web.Request, binding: str) -> str:
    key = request.app[API].secrets.jwt_secret.encode()
    return hmac.new(key, f"bm-pages-csrf:{binding}".encode(), hashlib.sha256).hexdigest()


def _binding(request: web.Request) -> str:
    visitor = request.get(VISITOR)
    if visitor is not None:
        return f"session:{visitor.session_id}"
    anon = request.cookies.get(ANON_COOKIE, "")
    if len(anon) < _ANON_LENGTH:
        anon = request.get(_NEW_ANON) or secrets.token_urlsafe(_ANON_LENGTH)
        request[_NEW_ANON] = anon  # set as a cookie on the response
    return f"anon:{anon}"


def csrf_token(request: web.Request) -> str:
    """The token to put in this visitor's forms."""
    return _sign(request, _binding(request))


async def check_csrf(request: web.Request) -> None:
    """Raise CsrfRejected unless the request carries the visitor's token."""
    given = request.headers.get(HEADER, "")
    if not given and request.content_type in {
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    }:
        form = await request.post()
        value = form.get(FIELD)
        given = value if isinstance(value, str) else ""
    visitor = request.get(VISITOR)
    if visitor is None and len(request.cookies.get(ANON_COOKIE, "")) < _ANON_LENGTH:
        raise CsrfRejected
    if not given or not hmac.compare_digest(given, _sign(request, _binding(request))):
        raise CsrfRejected


def remember_anon_cookie(request: web.Request, response: web.StreamResponse) -> None:
    """Set the pre-login cookie a rendered form was bound to, when it is new."""
    anon = request.get(_NEW_ANON)
    if anon is not None and not response.prepared:
        response.set_cookie(
            ANON_COOKIE,
            anon,
            path="/",
            httponly=True,
            samesite="Lax",
            secure=is_secure(request, request.app[API]),
        )

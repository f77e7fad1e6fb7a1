"""Flash messages: what an action did, shown once on the next page.

They travel in a short-lived signed cookie across the redirect that follows a form
(post, redirect, get), so a reload does not repeat the action or the message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from services.api.context import API

COOKIE = "bm_flash"
MAX_MESSAGES = 5
MAX_TEXT = 600
Level = Literal["success", "error", "info", "warning"]
LEVELS = frozenset({"success", "error", "info", "warning"})


@dataclass(frozen=True)
class Flash:
    level: Level
    text: str


_INCOMING: web.RequestKey[list[Flash]] = web.RequestKey("bm_flash_in")
_OUTGOING: web.RequestKey[list[Flash]] = web.RequestKey("bm_flash_out")
_SHOWN: web.RequestKey[bool] = web.RequestKey("bm_flash_shown")


def flash(request: web.Request, level: Level, text: str) -> None:
    request.setdefault(_OUTGOING, []).append(Flash(level, text[:MAX_TEXT]))


def take_flashes(request: web.Request) -> list[Flash]:
    """The messages to show on the page being rendered (they are then gone)."""
    request[_SHOWN] = True
    return [*request.get(_INCOMING, []), *request.get(_OUTGOING, [])]


def _sign(request: web.Request, payload: str) -> str:
    key = request.app[API].secrets.jwt_secret.encode()
    return hmac.new(key, f"bm-pages-flash:{payload}".encode(), hashlib.sha256).hexdigest()


def read_flashes(request: web.Request) -> None:
    """Load the messages the previous response left (ignored unless signed by us)."""
    raw = request.cookies.get(COOKIE, "")
    payload, _, signature = raw.partition(".")
    found: list[Flash] = []
    if payload and hmac.compare_digest(signature, _sign(request, payload)):
        try:
            items = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            found = [
                Flash(item["level"], str(item["text"])[:MAX_TEXT])
                for item in items[:MAX_MESSAGES]
                if item.get("level") in LEVELS
            ]
        except (ValueError, TypeError, KeyError, AttributeError):
            found = []
    request[_INCOMING] = found


def apply_flashes(request: web.Request, response: web.StreamResponse) -> None:
    """Carry unseen messages over a redirect; drop the cookie once they were shown."""
    if response.prepared:
        return
    had_cookie = COOKIE in request.cookies
    if 300 <= response.status < 400:
        pending = [
            *([] if request.get(_SHOWN) else request.get(_INCOMING, [])),
            *request.get(_OUTGOING, []),
        ][-MAX_MESSAGES:]
        if pending:
            data = [{"level": f.level, "text": f.text} for f in pending]
            payload = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
            response.set_cookie(
                COOKIE,
                f"{payload}.{_sign(request, payload)}",
                path="/",
                httponly=True,
                samesite="Lax",
                max_age=120,
            )
            return
    if had_cookie and (request.get(_SHOWN) or 300 <= response.status < 400):
        response.del_cookie(COOKIE, path="/")

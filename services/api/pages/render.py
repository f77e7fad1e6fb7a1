"""Jinja2 (autoescaped) templates and the filters they use; one environment per app."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web
from markupsafe import Markup

from services.api.context import API
from services.api.pages.csrf import csrf_token
from services.api.pages.flash import take_flashes
from services.api.pages.session import VISITOR
from services.common.db.enums import ProjectRole

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
PRODUCT = "BackupManager"
RANKS = {ProjectRole.VIEWER: 1, ProjectRole.OPERATOR: 2, ProjectRole.OWNER: 3}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


@dataclass
class Pages:
    """What the pages of one app share: templates and the static files' versions."""

    env: jinja2.Environment
    versions: dict[str, str] = field(default_factory=dict)

    def static_url(self, name: str) -> str:
        return f"/static/{name}?v={self.versions.get(name, '0')}"


PAGES: web.AppKey[Pages] = web.AppKey("pages", Pages)


def build_pages() -> Pages:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        bytes=human_bytes,
        dt=format_time,
        duration=human_duration,
        percent=percent,
        rate=human_rate,
        sentence=sentence,
        tojson_pretty=lambda value: json.dumps(value, indent=2, sort_keys=True, default=str),
    )
    env.globals.update(can=can, product=PRODUCT, ago=ago)
    versions = {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()[:10]
        for path in STATIC_DIR.iterdir()
        if path.is_file()
    }
    pages = Pages(env, versions)
    env.globals["static_url"] = pages.static_url
    return pages


def render(
    request: web.Request, template: str, context: dict[str, Any] | None = None, *, status: int = 200
) -> web.Response:
    """A page: the template with ``context`` and what every page knows (the visitor,
    the CSRF token, flash messages, the current path)."""
    pages = request.app[PAGES]
    visitor = request.get(VISITOR)
    values: dict[str, Any] = {
        "visitor": visitor,
        "csrf_token": csrf_token(request),
        "flashes": take_flashes(request),
        "path": request.path,
        "section": request.path.strip("/").split("/")[0],
        "now": request.app[API].clock(),
    }
    values.update(context or {})
    text = pages.env.get_template(template).render(values)
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def can(role: ProjectRole | str | None, at_least: str) -> bool:
    """Whether ``role`` is at least ``at_least`` (templates hide what one may not do)."""
    if role is None:
        return False
    return RANKS[ProjectRole(role)] >= RANKS[ProjectRole(at_least)]


# -- filters --------------------------------------------------------------------------

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(value: int | float | None) -> str:
    if value is None:
        return "—"
    size = float(value)
    for unit in _UNITS:
        if abs(size) < 1024 or unit == _UNITS[-1]:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} PiB"  # pragma: no cover - the loop always returns


def human_rate(value: float | None) -> str:
    return "—" if value is None else f"{human_bytes(value)}/s"


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{minutes} min {secs} s" if secs else f"{minutes} min"


def sentence(text: str | None) -> str:
    """A message from the domain ("cannot reach ...") as a sentence."""
    if not text:
        return ""
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else f"{text}."


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %".replace(".0 %", " %")


def format_time(value: datetime | None, zone: Any = None) -> Markup:
    """A ``<time>`` element: UTC by default, or in ``zone`` (a tzinfo)."""
    if value is None:
        return Markup("—")
    shown = value.astimezone(zone or UTC)
    label = shown.strftime("%Y-%m-%d %H:%M") + " " + (shown.tzname() or "UTC")
    return Markup('<time datetime="{}">{}</time>').format(value.astimezone(UTC).isoformat(), label)


def ago(value: datetime | None, now: datetime) -> str:
    """``5 min ago`` / ``in 3 h`` relative to ``now``."""
    if value is None:
        return "never"
    delta = (now - value).total_seconds()
    future = delta < 0
    delta = abs(delta)
    if delta < 60:
        text = "less than a minute" if future else "just now"
        return f"in {text}" if future else text
    for limit, unit, size in ((3600, "min", 60), (86400, "h", 3600), (math.inf, "d", 86400)):
        if delta < limit:
            amount = int(delta // size)
            return f"in {amount} {unit}" if future else f"{amount} {unit} ago"
    return ""  # pragma: no cover

"""Web sessions: an HttpOnly cookie holding the opaque token of a login session.

A page login is the same login as the API's (``domain.sessions.login``: bcrypt, the
rate limit, the audit): it starts a refresh-token family, and the cookie carries
that refresh token. Every page request looks the token's row up, so a session ends
at once when it is logged out, revoked (password change, account disabled, "log out
everywhere") or expired; the pages never rotate it. The cookie is ``SameSite=Lax``,
``HttpOnly`` and ``Secure`` when the request came over https or ``BM_PUBLIC_URL`` is
https.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from aiohttp import web
from sqlalchemy import select

from services.api.auth.principal import Principal
from services.api.auth.tokens import REFRESH_PREFIX, hash_token
from services.api.context import ApiContext
from services.common.db.models import RefreshToken, User

SESSION_COOKIE = "bm_session"
MAX_TOKEN_LENGTH = 256


@dataclass(frozen=True)
class Visitor:
    """A logged-in person, as the pages see them."""

    principal: Principal
    session_id: uuid.UUID
    """The session's refresh-token row (binds the CSRF token)."""
    token: str
    """The cookie's value (needed to log out)."""

    @property
    def email(self) -> str:
        return self.principal.email

    @property
    def is_admin(self) -> bool:
        return self.principal.acts_as_admin


VISITOR: web.RequestKey[Visitor | None] = web.RequestKey("bm_visitor")


async def load_visitor(ctx: ApiContext, token: str | None, now: datetime) -> Visitor | None:
    """The visitor of a session cookie, or None when it is missing, unknown, ended or
    expired, or its account is disabled."""
    if not token or not token.startswith(REFRESH_PREFIX) or len(token) > MAX_TOKEN_LENGTH:
        return None
    async with ctx.transaction() as session:
        row = (
            await session.execute(
                select(RefreshToken, User)
                .join(User, User.id == RefreshToken.user_id)
                .where(RefreshToken.token_hash == hash_token(token))
            )
        ).one_or_none()
    if row is None:
        return None
    refresh, user = row
    if refresh.revoked_at is not None or refresh.replaced_by_id is not None:
        return None
    if refresh.expires_at <= now or not user.is_active:
        return None
    principal = Principal(user_id=user.id, email=user.email, is_admin=user.is_admin)
    return Visitor(principal=principal, session_id=refresh.id, token=token)


def is_secure(request: web.Request, ctx: ApiContext) -> bool:
    return request.secure or ctx.settings.public_url.lower().startswith("https://")


def set_session_cookie(
    response: web.StreamResponse, request: web.Request, ctx: ApiContext, token: str
) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=ctx.settings.refresh_token_ttl_s,
        path="/",
        httponly=True,
        samesite="Lax",
        secure=is_secure(request, ctx),
    )


def clear_session_cookie(response: web.StreamResponse) -> None:
    response.del_cookie(SESSION_COOKIE, path="/")

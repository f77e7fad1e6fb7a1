"""Who is calling: resolved from ``Authorization: Bearer`` — an access JWT or an API
token — and checked against the users table (a deactivated user or a revoked token
stops working).

The check is remembered for ``BM_API_AUTH_CACHE_S`` seconds (default 2): a burst of
requests with one token costs one lookup, not one each. This process forgets every
check after any change it makes (users, tokens, anything), so a change made here
applies at once; one made by another API process or a command applies within that
many seconds. A JWT's own expiry is checked on every request."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.auth.tokens import (
    API_TOKEN_PREFIX,
    InvalidToken,
    decode_access_token,
    hash_token,
)
from services.api.context import ApiContext
from services.api.web.errors import Unauthorized
from services.common.db.enums import ProjectRole
from services.common.db.models import ApiToken, User

TOKEN_TOUCH_INTERVAL = timedelta(minutes=1)


@dataclass(frozen=True)
class Principal:
    user_id: uuid.UUID
    email: str
    is_admin: bool
    api_token_id: uuid.UUID | None = None
    token_project_id: uuid.UUID | None = None
    """An API token limited to one project sees only that project."""
    token_role: ProjectRole | None = None
    """An API token limited to a role acts with at most that role."""

    @property
    def acts_as_admin(self) -> bool:
        """Admin rights, unless the call comes through a token limited in scope."""
        return self.is_admin and self.token_project_id is None and self.token_role is None


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if not header:
        return None
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized("Authorization must be 'Bearer <token>'")
    return value.strip()


async def resolve_principal(ctx: ApiContext, token: str, now: datetime) -> Principal:
    """The caller behind ``token``; a database lookup only when no recent check is
    remembered."""
    if token.startswith(API_TOKEN_PREFIX):
        key: object = hash_token(token)
        if (known := ctx.principals.get(key, now)) is not None:
            return known
        generation = ctx.principals.generation
        async with ctx.transaction() as session:  # it may note when the token was used
            principal, expires_at = await _from_api_token(session, token, now)
        ctx.principals.put(key, principal, now, expires_at, generation)
        return principal
    if (known := ctx.principals.get(token, now)) is not None:
        return known  # signature checked before; expiry checked by get()
    try:
        user_id, expires_at = decode_access_token(token, secret=ctx.secrets.jwt_secret, now=now)
    except InvalidToken as exc:
        raise Unauthorized(f"{exc}; log in again") from None
    generation = ctx.principals.generation
    async with ctx.reading() as session:
        row = (
            await session.execute(
                select(User.email, User.is_admin).where(User.id == user_id, User.is_active)
            )
        ).one_or_none()
    if row is None:
        raise Unauthorized("this account is disabled or no longer exists")
    principal = Principal(user_id=user_id, email=row.email, is_admin=row.is_admin)
    ctx.principals.put(token, principal, now, expires_at, generation)
    return principal


async def _from_api_token(
    session: AsyncSession, token: str, now: datetime
) -> tuple[Principal, datetime | None]:
    row = (
        await session.execute(
            select(ApiToken, User)
            .join(User, User.id == ApiToken.user_id)
            .where(ApiToken.token_hash == hash_token(token))
        )
    ).one_or_none()
    if row is None:
        raise Unauthorized("unknown API token")
    api_token, user = row
    if api_token.revoked_at is not None:
        raise Unauthorized("this API token was revoked")
    if api_token.expires_at is not None and api_token.expires_at <= now:
        raise Unauthorized("this API token expired")
    if not user.is_active:
        raise Unauthorized("this account is disabled")
    if api_token.last_used_at is None or now - api_token.last_used_at > TOKEN_TOUCH_INTERVAL:
        api_token.last_used_at = now
    principal = Principal(
        user_id=user.id,
        email=user.email,
        is_admin=user.is_admin,
        api_token_id=api_token.id,
        token_project_id=api_token.project_id,
        token_role=api_token.role,
    )
    return principal, api_token.expires_at

"""Who is calling: resolved from ``Authorization: Bearer`` — an access JWT or an API
token — and checked against the users table on every request (a deactivated user or
a revoked token stops working at once)."""

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


async def resolve_principal(
    session: AsyncSession, ctx: ApiContext, token: str, now: datetime
) -> Principal:
    if token.startswith(API_TOKEN_PREFIX):
        return await _from_api_token(session, token, now)
    try:
        user_id = decode_access_token(token, secret=ctx.secrets.jwt_secret, now=now)
    except InvalidToken as exc:
        raise Unauthorized(f"{exc}; log in again") from None
    user = await session.get(User, user_id)
    if user is None or not user.is_active:
        raise Unauthorized("this account is disabled or no longer exists")
    return Principal(user_id=user.id, email=user.email, is_admin=user.is_admin)


async def _from_api_token(session: AsyncSession, token: str, now: datetime) -> Principal:
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
    return Principal(
        user_id=user.id,
        email=user.email,
        is_admin=user.is_admin,
        api_token_id=api_token.id,
        token_project_id=api_token.project_id,
        token_role=api_token.role,
    )

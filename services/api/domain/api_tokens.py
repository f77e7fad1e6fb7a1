"""API tokens: named, revocable credentials for automation.

A token acts as its user, optionally limited to one project and to a role (it then
does at most what that role may, and never more than its user may). The secret is
shown once when created; only its SHA-256 hash and first characters are kept.
Tokens are managed with a login session, never with another API token (a limited
token must not be able to mint an unlimited one).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.auth.principal import Principal
from services.api.auth.tokens import API_TOKEN_PREFIX, hash_token, new_opaque_token
from services.api.domain.access import RANK, require_role
from services.api.web.errors import Forbidden, ValidationFailed, not_found
from services.api.web.pagination import PageQuery, paginate
from services.common.db.enums import ProjectRole
from services.common.db.models import ApiToken, Project

API_TOKEN = "API token"  # noqa: S105 - a noun for messages
SHOWN_PREFIX_LENGTH = len(API_TOKEN_PREFIX) + 8


def require_login_session(principal: Principal) -> None:
    if principal.api_token_id is not None:
        raise Forbidden(
            "log in with your password to do this: an API token cannot manage "
            "API tokens or change the password"
        )


async def create_api_token(
    session: AsyncSession,
    principal: Principal,
    *,
    name: str,
    project_id: uuid.UUID | None,
    role: ProjectRole | None,
    expires_in_days: int | None,
    now: datetime,
) -> tuple[ApiToken, str]:
    """The new token's row and its secret (to show once)."""
    require_login_session(principal)
    if project_id is not None:
        own = await require_role(session, principal, project_id, ProjectRole.VIEWER, "project")
        if await session.get(Project, project_id) is None:  # an admin "sees" any id
            raise not_found("project")
        if role is not None and RANK[role] > RANK[own]:
            raise ValidationFailed(
                f"a token cannot do more than you: you are {own.value} in this project",
                fields={"role": f"at most {own.value}"},
            )
    secret = new_opaque_token(API_TOKEN_PREFIX)
    token = ApiToken(
        user_id=principal.user_id,
        name=name,
        token_hash=hash_token(secret),
        prefix=secret[:SHOWN_PREFIX_LENGTH],
        project_id=project_id,
        role=role,
        expires_at=now + timedelta(days=expires_in_days) if expires_in_days else None,
        created_at=now,
    )
    session.add(token)
    await session.flush()
    return token, secret


async def list_api_tokens(
    session: AsyncSession, principal: Principal, page: PageQuery, *, include_revoked: bool
) -> tuple[list[ApiToken], str | None, int | None]:
    """The caller's own tokens, newest first."""
    require_login_session(principal)
    stmt = select(ApiToken).where(ApiToken.user_id == principal.user_id)
    if not include_revoked:
        stmt = stmt.where(ApiToken.revoked_at.is_(None))
    return await paginate(session, stmt, page, order=(ApiToken.created_at, ApiToken.id))


async def revoke_api_token(
    session: AsyncSession, principal: Principal, token_id: uuid.UUID, now: datetime
) -> ApiToken:
    """Revoke one of the caller's tokens (again is fine); it stops working at once."""
    require_login_session(principal)
    token = await session.get(ApiToken, token_id)
    if token is None or token.user_id != principal.user_id:
        raise not_found(API_TOKEN)
    if token.revoked_at is None:
        token.revoked_at = now
        await session.flush()
    return token

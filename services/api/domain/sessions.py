"""Login sessions: password login, refresh-token rotation with reuse detection,
logout and password change.

A session is one *family* of refresh tokens: login starts a family, every refresh
replaces the presented token by a new one of the same family (``replaced_by_id``),
and presenting a token that was already replaced or revoked is taken as theft — the
whole family is revoked. Access tokens are stateless JWTs: they stay valid until
they expire (``BM_ACCESS_TOKEN_TTL_S``), unless the account is disabled or deleted
(checked on every request).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.auth.principal import Principal
from services.api.auth.ratelimit import LoginThrottle
from services.api.auth.tokens import (
    REFRESH_PREFIX,
    hash_token,
    issue_access_token,
    new_opaque_token,
)
from services.api.web.errors import TooManyRequests, Unauthorized, ValidationFailed
from services.common.db.models import RefreshToken, User
from services.common.passwords import hash_password, verify_password
from services.common.secrets import Secrets
from services.common.settings import Settings

WRONG_CREDENTIALS = "wrong email or password"
ACCOUNT_DISABLED = "this account is disabled: ask an administrator"


@dataclass(frozen=True)
class AuthConfig:
    jwt_secret: str
    access_ttl_s: int
    refresh_ttl_s: int
    bcrypt_rounds: int

    @classmethod
    def of(cls, settings: Settings, secrets: Secrets) -> AuthConfig:
        return cls(
            jwt_secret=secrets.jwt_secret,
            access_ttl_s=settings.access_token_ttl_s,
            refresh_ttl_s=settings.refresh_token_ttl_s,
            bcrypt_rounds=settings.bcrypt_rounds,
        )


@dataclass(frozen=True)
class Issued:
    """A session's tokens, as the login response shows them (once)."""

    user: User
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_token_id: uuid.UUID


@dataclass(frozen=True)
class Refused:
    """A refresh that failed; anything it revoked must still be committed."""

    message: str
    user_id: uuid.UUID | None = None
    email: str | None = None


# -- passwords (bcrypt runs in a thread: it takes a noticeable fraction of a second) --


async def hash_new_password(password: str, rounds: int) -> str:
    return await asyncio.to_thread(hash_password, password, rounds=rounds)


async def check_password(password: str, password_hash: str | None, rounds: int) -> bool:
    """``password_hash`` None (no such user) still costs one bcrypt check, so the
    answer takes as long whether the account exists or not."""

    def check() -> bool:
        ok = verify_password(password, password_hash or _dummy_hash(rounds))
        return ok and password_hash is not None

    return await asyncio.to_thread(check)


@lru_cache(maxsize=4)
def _dummy_hash(rounds: int) -> str:
    return hash_password(uuid.uuid4().hex, rounds=rounds)


# -- login ------------------------------------------------------------------------


async def login(
    session: AsyncSession,
    config: AuthConfig,
    throttle: LoginThrottle,
    *,
    email: str,
    password: str,
    client: str,
    now: datetime,
) -> Issued:
    """Start a session. The same answer for an unknown email and a wrong password;
    429 once the client address or the account had too many failures."""
    _check_throttle(throttle, client, email)
    user = await session.scalar(select(User).where(User.email == email))
    ok = await check_password(password, user.password_hash if user else None, config.bcrypt_rounds)
    if user is None or not ok:
        throttle.failed(client, email)
        raise Unauthorized(WRONG_CREDENTIALS, code="invalid_credentials")
    throttle.succeeded(email)
    if not user.is_active:
        raise Unauthorized(ACCOUNT_DISABLED, code="account_disabled")
    user.last_login_at = now
    return await _start(session, config, user, now)


def _check_throttle(throttle: LoginThrottle, client: str, account: str) -> None:
    wait = throttle.retry_after_s(client, account)
    if wait is not None:
        raise TooManyRequests(
            f"too many failed attempts from this address or for this account; "
            f"try again in {wait} seconds",
            retry_after_s=wait,
        )


async def _start(
    session: AsyncSession,
    config: AuthConfig,
    user: User,
    now: datetime,
    family_id: uuid.UUID | None = None,
) -> Issued:
    refresh = new_opaque_token(REFRESH_PREFIX)
    row = RefreshToken(
        user_id=user.id,
        token_hash=hash_token(refresh),
        family_id=family_id or uuid.uuid4(),
        expires_at=now + timedelta(seconds=config.refresh_ttl_s),
        created_at=now,
    )
    session.add(row)
    await session.flush()
    access = issue_access_token(
        user.id, secret=config.jwt_secret, now=now, ttl_s=config.access_ttl_s
    )
    return Issued(user, access, refresh, config.access_ttl_s, row.id)


# -- refresh ----------------------------------------------------------------------


async def refresh(
    session: AsyncSession, config: AuthConfig, token: str, now: datetime
) -> Issued | Refused:
    """Swap a refresh token for a new pair. Each new refresh token lives
    ``refresh_ttl_s`` from its issue (a session in use stays alive)."""
    row = await session.scalar(
        select(RefreshToken).where(RefreshToken.token_hash == hash_token(token))
    )
    user = await session.get(User, row.user_id) if row is not None else None
    if row is None or user is None:  # (tokens go with their user: ON DELETE CASCADE)
        return Refused("unknown refresh token; log in again")
    if row.revoked_at is not None or row.replaced_by_id is not None:
        return await _reused(session, row, user, now)
    if row.expires_at <= now:
        return Refused("refresh token expired; log in again", user.id, user.email)
    if not user.is_active:
        await revoke_family(session, row.family_id, now)
        return Refused(ACCOUNT_DISABLED, user.id, user.email)
    issued = await _start(session, config, user, now, row.family_id)
    # Only one of two concurrent refreshes with the same token may win.
    result = cast(
        "CursorResult[Any]",
        await session.execute(
            update(RefreshToken)
            .where(
                RefreshToken.id == row.id,
                RefreshToken.replaced_by_id.is_(None),
                RefreshToken.revoked_at.is_(None),
            )
            .values(replaced_by_id=issued.refresh_token_id)
            .execution_options(synchronize_session=False)
        ),
    )
    if result.rowcount != 1:
        return await _reused(session, row, user, now)
    return issued


async def _reused(session: AsyncSession, row: RefreshToken, user: User, now: datetime) -> Refused:
    await revoke_family(session, row.family_id, now)
    return Refused(
        "this refresh token was already used or revoked, so the session was ended "
        "everywhere it was in use; log in again",
        user.id,
        user.email,
    )


async def revoke_family(session: AsyncSession, family_id: uuid.UUID, now: datetime) -> int:
    return await _revoke(session, RefreshToken.family_id == family_id, now)


async def revoke_all_sessions(session: AsyncSession, user_id: uuid.UUID, now: datetime) -> int:
    """End every session of a user (their access tokens live on until they expire)."""
    return await _revoke(session, RefreshToken.user_id == user_id, now)


async def _revoke(session: AsyncSession, which: Any, now: datetime) -> int:
    result = cast(
        "CursorResult[Any]",
        await session.execute(
            update(RefreshToken)
            .where(which, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=now)
            .execution_options(synchronize_session=False)
        ),
    )
    return result.rowcount


# -- logout -----------------------------------------------------------------------


@dataclass(frozen=True)
class LoggedOut:
    user_id: uuid.UUID | None
    revoked: int


async def logout(
    session: AsyncSession,
    principal: Principal | None,
    *,
    refresh_token: str | None,
    all_sessions: bool,
    now: datetime,
) -> LoggedOut:
    """End the session of ``refresh_token`` (its whole family), or with
    ``all_sessions`` every session of its user (or of the caller). Logging out
    with an unknown or already revoked token is not an error."""
    user_id = principal.user_id if principal else None
    family_id = None
    if refresh_token is not None:
        row = await session.scalar(
            select(RefreshToken).where(RefreshToken.token_hash == hash_token(refresh_token))
        )
        if row is not None:
            user_id, family_id = row.user_id, row.family_id
        elif not all_sessions:
            return LoggedOut(user_id, 0)
    elif not all_sessions:
        raise ValidationFailed(
            "say which session to end",
            fields={"refresh_token": "send the session's refresh token, or all_sessions: true"},
        )
    if all_sessions:
        if user_id is None:
            raise Unauthorized("log in first, or send a valid refresh_token")
        return LoggedOut(user_id, await revoke_all_sessions(session, user_id, now))
    assert family_id is not None
    return LoggedOut(user_id, await revoke_family(session, family_id, now))


# -- password change --------------------------------------------------------------


async def change_password(
    session: AsyncSession,
    config: AuthConfig,
    throttle: LoginThrottle,
    principal: Principal,
    *,
    current_password: str,
    new_password: str,
    client: str,
    now: datetime,
) -> Issued:
    """Set a new password, end every session of the account, and start a new one
    for the caller. A wrong current password counts as a failed login."""
    user = await session.get(User, principal.user_id)
    if user is None:
        raise Unauthorized("this account no longer exists")
    _check_throttle(throttle, client, user.email)
    if not await check_password(current_password, user.password_hash, config.bcrypt_rounds):
        throttle.failed(client, user.email)
        raise ValidationFailed(
            "the current password is wrong", fields={"current_password": "wrong password"}
        )
    throttle.succeeded(user.email)
    user.password_hash = await hash_new_password(new_password, config.bcrypt_rounds)
    await revoke_all_sessions(session, user.id, now)
    return await _start(session, config, user, now)

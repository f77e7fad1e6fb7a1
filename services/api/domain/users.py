"""Accounts: self-registration and what administrators do with users.

There is always at least one active administrator: the last one can be neither
demoted, disabled nor deleted.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.auth.principal import Principal
from services.api.domain.sessions import hash_new_password, revoke_all_sessions
from services.api.web.errors import Conflict, Forbidden, not_found
from services.api.web.pagination import PageQuery, paginate
from services.common.db.models import User

USER = "user"
REGISTRATION_CLOSED = "self-registration is closed: an administrator can create an account for you"
EMAIL_TAKEN = "an account with this email exists"


async def register(
    session: AsyncSession, *, email: str, password: str, allowed: bool, rounds: int
) -> User:
    """Create an account for oneself. The very first account is always allowed and
    becomes an administrator; later ones only when registration is open."""
    first = not await session.scalar(select(func.count()).select_from(User))
    if not first and not allowed:
        raise Forbidden(REGISTRATION_CLOSED, code="registration_closed")
    password_hash = await hash_new_password(password, rounds)
    if first:
        try:
            return await _insert(session, email, password_hash, True, first_account=True)
        except FirstTaken:  # another registration won the race to be first
            if not allowed:
                raise Forbidden(REGISTRATION_CLOSED, code="registration_closed") from None
    return await _insert(session, email, password_hash, False)


class FirstTaken(Exception):
    """Another account registered first meanwhile."""


async def create_user(
    session: AsyncSession,
    principal: Principal,
    *,
    email: str,
    password: str,
    is_admin: bool,
    rounds: int,
) -> User:
    _require_admin(principal)
    return await _insert(session, email, await hash_new_password(password, rounds), is_admin)


async def _insert(
    session: AsyncSession,
    email: str,
    password_hash: str,
    is_admin: bool,
    *,
    first_account: bool | None = None,
) -> User:
    if await session.scalar(select(User.id).where(User.email == email)) is not None:
        raise Conflict(EMAIL_TAKEN, fields={"email": "already registered"})
    user = User(email=email, password_hash=password_hash, is_admin=is_admin, is_active=True,
                first_account=first_account)  # fmt: skip
    try:
        async with session.begin_nested():
            session.add(user)
    except IntegrityError:  # registered at the same moment by another request
        if first_account and await session.scalar(
            select(User.id).where(User.first_account.is_(True))
        ):
            raise FirstTaken from None
        raise Conflict(EMAIL_TAKEN, fields={"email": "already registered"}) from None
    return user


async def list_users(
    session: AsyncSession,
    principal: Principal,
    page: PageQuery,
    *,
    email: str | None = None,
    is_admin: bool | None = None,
    is_active: bool | None = None,
) -> tuple[list[User], str | None, int | None]:
    _require_admin(principal)
    stmt = select(User)
    if email:
        stmt = stmt.where(func.lower(User.email).contains(email.lower(), autoescape=True))
    if is_admin is not None:
        stmt = stmt.where(User.is_admin.is_(is_admin))
    if is_active is not None:
        stmt = stmt.where(User.is_active.is_(is_active))
    return await paginate(session, stmt, page, order=(User.created_at, User.id))


async def get_user(session: AsyncSession, principal: Principal, user_id: uuid.UUID) -> User:
    _require_admin(principal)
    return await _user(session, user_id)


async def update_user(
    session: AsyncSession,
    principal: Principal,
    user_id: uuid.UUID,
    *,
    is_admin: bool | None,
    is_active: bool | None,
    password: str | None,
    rounds: int,
    now: datetime,
) -> User:
    """Change a user's rights, state or password. Disabling an account or setting
    its password ends all its sessions."""
    _require_admin(principal)
    user = await _user(session, user_id)
    if is_active is False and user.id == principal.user_id:
        raise Conflict("you cannot disable your own account")
    loses_admin = is_admin is False or is_active is False
    if loses_admin and user.is_admin and user.is_active:
        await _keep_an_admin(session, user.id, "demote or disable")
    if is_admin is not None:
        user.is_admin = is_admin
    sign_out = False
    if is_active is not None:
        sign_out = user.is_active and not is_active
        user.is_active = is_active
    if password is not None:
        user.password_hash = await hash_new_password(password, rounds)
        sign_out = True
    await session.flush()
    if sign_out:
        await revoke_all_sessions(session, user.id, now)
    return user


async def delete_user(session: AsyncSession, principal: Principal, user_id: uuid.UUID) -> str:
    """Delete an account with its memberships, sessions and API tokens (the audit
    log keeps its entries, without the link); returns the email it had."""
    _require_admin(principal)
    if user_id == principal.user_id:
        raise Conflict("you cannot delete your own account")
    user = await _user(session, user_id)
    if user.is_admin and user.is_active:
        await _keep_an_admin(session, user.id, "delete")
    try:
        async with session.begin_nested():
            await session.delete(user)
    except IntegrityError:
        raise Conflict(
            "other records still refer to this user, so it cannot be deleted; "
            "disable the account instead (is_active: false)"
        ) from None
    return user.email


def _require_admin(principal: Principal) -> None:
    if not principal.acts_as_admin:
        raise Forbidden("only an administrator may do this")


async def _user(session: AsyncSession, user_id: uuid.UUID) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise not_found(USER)
    return user


async def _keep_an_admin(session: AsyncSession, user_id: uuid.UUID, verb: str) -> None:
    others = await session.scalar(
        select(func.count()).where(
            User.is_admin.is_(True), User.is_active.is_(True), User.id != user_id
        )
    )
    if not others:
        raise Conflict(
            f"cannot {verb} the last active administrator: make someone else an admin first"
        )

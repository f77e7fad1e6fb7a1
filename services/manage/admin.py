"""Administrative actions shared by the launcher and ``python -m services.manage``."""

from __future__ import annotations

import logging

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.db.engine import create_engine, session_factory
from services.common.db.models import User
from services.common.errors import ConfigError
from services.common.passwords import PasswordError, generate_password, hash_password
from services.common.secrets import is_placeholder
from services.common.settings import Settings

log = logging.getLogger(__name__)


async def ensure_first_admin(settings: Settings) -> tuple[str, str | None] | None:
    """Create the first admin when there are no users yet.

    The password comes from ``BM_ADMIN_PASSWORD``; without it one is generated and
    returned so the caller can show it once. Returns ``None`` when users exist.
    """
    engine = create_engine(settings.database_url)
    try:
        return await _create_first_admin(engine, settings)
    except IntegrityError:  # an account registered first, at this very moment
        return None
    finally:
        await engine.dispose()


async def _create_first_admin(
    engine: AsyncEngine, settings: Settings
) -> tuple[str, str | None] | None:
    async with session_factory(engine)() as session, session.begin():
        count = await session.scalar(select(func.count()).select_from(User))
        if count:
            return None
        given = settings.admin_password.get_secret_value() if settings.admin_password else None
        if given is not None and settings.is_production and is_placeholder(given):
            raise ConfigError("BM_ADMIN_PASSWORD is a placeholder: set a real password")
        password = given or generate_password()
        email = settings.admin_email.strip().lower()
        try:
            password_hash = hash_password(password, rounds=settings.bcrypt_rounds)
        except PasswordError as exc:
            raise ConfigError(f"BM_ADMIN_PASSWORD is not usable: {exc}") from None
        session.add(User(email=email, password_hash=password_hash, is_admin=True,
                         first_account=True))  # fmt: skip
    log.info("first admin created: %s", email)
    return email, (None if given else password)

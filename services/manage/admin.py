"""Administrative actions shared by the launcher and ``python -m services.manage``."""

from __future__ import annotations

import logging

from sqlalchemy import func, select

from services.common.db.engine import create_engine, session_factory
from services.common.db.models import User
from services.common.passwords import generate_password, hash_password
from services.common.settings import Settings

log = logging.getLogger(__name__)


async def ensure_first_admin(settings: Settings) -> tuple[str, str | None] | None:
    """Create the first admin when there are no users yet.

    The password comes from ``BM_ADMIN_PASSWORD``; without it one is generated and
    returned so the caller can show it once. Returns ``None`` when users exist.
    """
    engine = create_engine(settings.database_url)
    try:
        async with session_factory(engine)() as session, session.begin():
            count = await session.scalar(select(func.count()).select_from(User))
            if count:
                return None
            given = settings.admin_password.get_secret_value() if settings.admin_password else None
            password = given or generate_password()
            email = settings.admin_email.strip().lower()
            session.add(User(email=email, password_hash=hash_password(password), is_admin=True))
        log.info("first admin created: %s", email)
        return email, (None if given else password)
    finally:
        await engine.dispose()

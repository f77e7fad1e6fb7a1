"""The first admin: created once, from BM_ADMIN_PASSWORD or a generated password,
and never from a placeholder in production."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from services.common.db.engine import create_engine, session_factory
from services.common.db.models import User
from services.common.errors import ConfigError
from services.common.migrate import upgrade
from services.common.passwords import verify_password
from services.common.settings import Settings
from services.manage.admin import ensure_first_admin


async def users(url: str) -> list[User]:
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            return list(await session.scalars(select(User)))
    finally:
        await engine.dispose()


async def test_created_once_with_the_given_password(sqlite_url: str, tmp_path: Path) -> None:
    await upgrade(sqlite_url)
    settings = Settings(
        data_dir=tmp_path,
        database_url=sqlite_url,
        admin_email=" Root@Example.org ",
        admin_password="a-long-enough-password",
    )
    assert await ensure_first_admin(settings) == ("root@example.org", None)
    assert await ensure_first_admin(settings) is None
    [admin] = await users(sqlite_url)
    assert admin.is_admin
    assert verify_password("a-long-enough-password", admin.password_hash)


async def test_generated_password_is_returned_once(sqlite_url: str, tmp_path: Path) -> None:
    await upgrade(sqlite_url)
    created = await ensure_first_admin(Settings(data_dir=tmp_path, database_url=sqlite_url))
    assert created is not None
    email, password = created
    assert email == "admin@localhost"
    assert password is not None
    [admin] = await users(sqlite_url)
    assert verify_password(password, admin.password_hash)


@pytest.mark.parametrize(("password", "reason"), [("changeme", "placeholder"), ("short", "usable")])
async def test_production_refuses_weak_admin_password(
    sqlite_url: str, tmp_path: Path, password: str, reason: str
) -> None:
    await upgrade(sqlite_url)
    settings = Settings(
        mode="production",
        data_dir=tmp_path,
        database_url=sqlite_url,
        credential_keys=Fernet.generate_key().decode(),
        jwt_secret="j" * 40,
        admin_password=password,
    )
    with pytest.raises(ConfigError, match=f"BM_ADMIN_PASSWORD .*{reason}"):
        await ensure_first_admin(settings)
    assert await users(sqlite_url) == []

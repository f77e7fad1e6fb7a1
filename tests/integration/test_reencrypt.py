"""``python -m services.manage re-encrypt-credentials`` as a real process against a
migrated SQLite file: every credential moves to the newest key, a second run changes
nothing, and an unreadable token stops the command naming the row, not the secret."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet
from sqlalchemy import select

from services.common.credentials import CredentialCipher
from services.common.db.engine import create_engine, session_factory
from services.common.db.enums import DatabaseEngine, DestinationKind
from services.common.db.models import Database, Destination, Project
from services.common.migrate import upgrade
from tests.processes import REPO

OLD, NEW, STRANGER = (Fernet.generate_key().decode() for _ in range(3))


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str


async def manage(tmp_path: Path, url: str, keys: list[str], command: str) -> Run:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BM_")}
    env.update(
        BM_DATA_DIR=str(tmp_path / "data"),
        BM_DATABASE_URL=url,
        BM_CREDENTIAL_KEYS=",".join(keys),
        PYTHONUNBUFFERED="1",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.manage", command,
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return Run(process.returncode, stdout.decode(), stderr.decode())


async def seed(url: str, secrets: dict[str, tuple[str, str | None]]) -> dict[str, uuid.UUID]:
    """Rows named by ``secrets``: name -> (key it is encrypted with, plaintext or None).
    Names starting with ``dest`` are destinations, others databases."""
    engine = create_engine(url)
    ids: dict[str, uuid.UUID] = {}
    try:
        async with session_factory(engine)() as session, session.begin():
            project = Project(name="p", slug=f"p-{uuid.uuid4().hex[:6]}")
            session.add(project)
            await session.flush()
            for name, (key, plaintext) in secrets.items():
                token = CredentialCipher([key]).encrypt(plaintext).encode() if plaintext else None
                if name.startswith("dest"):
                    row: Database | Destination = Destination(
                        name=name, kind=DestinationKind.S3, config={}, encrypted_secret=token
                    )
                else:
                    row = Database(
                        project_id=project.id, name=name, engine=DatabaseEngine.POSTGRESQL,
                        host="h", port=5432, encrypted_password=token,
                    )  # fmt: skip
                session.add(row)
                await session.flush()
                ids[name] = row.id
    finally:
        await engine.dispose()
    return ids


async def tokens(url: str) -> dict[uuid.UUID, bytes | None]:
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            found: dict[uuid.UUID, bytes | None] = {}
            for row in await session.execute(select(Database.id, Database.encrypted_password)):
                found[row.id] = row.encrypted_password
            for row in await session.execute(select(Destination.id, Destination.encrypted_secret)):
                found[row.id] = row.encrypted_secret
            return found
    finally:
        await engine.dispose()


async def test_reencrypt_moves_every_credential_to_the_newest_key(
    sqlite_url: str, tmp_path: Path
) -> None:
    await upgrade(sqlite_url)
    ids = await seed(
        sqlite_url,
        {
            "orders": (OLD, "orders-pw"),
            "users": (OLD, "users-pw"),
            "cache": (NEW, "cache-pw"),
            "nopass": (OLD, None),
            "dest-s3": (OLD, "s3-secret-key"),
        },
    )
    before = await tokens(sqlite_url)

    first = await manage(tmp_path, sqlite_url, [NEW, OLD], "re-encrypt-credentials")
    assert first.code == 0, first.stderr
    assert "database passwords: 2 re-encrypted, 1 already under the newest key" in first.stdout
    assert "destination secrets: 1 re-encrypted, 0 already under the newest key" in first.stdout

    after = await tokens(sqlite_url)
    only_new = CredentialCipher([NEW])
    plain = {"orders": "orders-pw", "users": "users-pw", "cache": "cache-pw"}
    plain["dest-s3"] = "s3-secret-key"
    for name, expected in plain.items():
        token = after[ids[name]]
        assert token is not None
        assert only_new.decrypt(token.decode()) == expected
    assert after[ids["nopass"]] is None
    assert after[ids["orders"]] != before[ids["orders"]]
    assert after[ids["cache"]] == before[ids["cache"]]  # already current: untouched

    again = await manage(tmp_path, sqlite_url, [NEW, OLD], "re-encrypt-credentials")
    assert again.code == 0, again.stderr
    assert "database passwords: 0 re-encrypted, 3 already under the newest key" in again.stdout
    assert await tokens(sqlite_url) == after

    # The old key can now go.
    alone = await manage(tmp_path, sqlite_url, [NEW], "re-encrypt-credentials")
    assert alone.code == 0, alone.stderr
    assert "0 re-encrypted" in alone.stdout


async def test_unreadable_token_fails_naming_the_row_and_changes_nothing(
    sqlite_url: str, tmp_path: Path
) -> None:
    await upgrade(sqlite_url)
    ids = await seed(
        sqlite_url,
        {"good": (OLD, "good-pw"), "lost": (STRANGER, "lost-plaintext-pw")},
    )
    before = await tokens(sqlite_url)

    run = await manage(tmp_path, sqlite_url, [NEW, OLD], "re-encrypt-credentials")
    assert run.code == 2
    assert f"database {ids['lost']}" in run.stderr
    assert str(ids["good"]) not in run.stderr
    assert "Nothing was changed" in run.stderr
    for text in (run.stdout, run.stderr):
        assert "lost-plaintext-pw" not in text
        assert "good-pw" not in text
        assert NEW not in text
        assert OLD not in text
    assert "Traceback" not in run.stderr
    assert await tokens(sqlite_url) == before

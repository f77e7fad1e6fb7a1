"""Re-encrypting every stored credential under the newest key (the first of
``BM_CREDENTIAL_KEYS``), so older keys can then be removed.

Idempotent: a token already readable with the newest key alone is left as it is.
All or nothing: if any token cannot be decrypted with any configured key, nothing
changes and the error names the rows (never a secret).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from services.common.credentials import CredentialCipher, CredentialError
from services.common.db.engine import create_engine, session_factory
from services.common.db.models import Database, Destination

log = logging.getLogger(__name__)
MAX_NAMED = 20


@dataclass
class Counts:
    rotated: int = 0
    current: int = 0
    unreadable: list[str] = field(default_factory=list)


@dataclass
class ReencryptReport:
    database_passwords: Counts
    destination_secrets: Counts

    def summary(self) -> str:
        return "\n".join(
            f"{what}: {counts.rotated} re-encrypted, {counts.current} already under the newest key"
            for what, counts in (
                ("database passwords", self.database_passwords),
                ("destination secrets", self.destination_secrets),
            )
        )


class UnreadableCredentials(CredentialError):
    """Some tokens cannot be decrypted with any configured key; nothing was changed."""


async def reencrypt_credentials(database_url: str, keys: Sequence[str]) -> ReencryptReport:
    if not keys:
        raise CredentialError("no credential key configured")
    every_key = CredentialCipher(keys)
    newest_only = CredentialCipher(keys[:1])
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session, session.begin():
            report = ReencryptReport(
                database_passwords=await _rotate(
                    session, Database, Database.encrypted_password, every_key, newest_only
                ),
                destination_secrets=await _rotate(
                    session, Destination, Destination.encrypted_secret, every_key, newest_only
                ),
            )
            unreadable = [
                *(f"database {i}" for i in report.database_passwords.unreadable),
                *(f"destination {i}" for i in report.destination_secrets.unreadable),
            ]
            if unreadable:  # leaving the block by raising rolls everything back
                named = ", ".join(unreadable[:MAX_NAMED])
                more = (
                    f" and {len(unreadable) - MAX_NAMED} more"
                    if len(unreadable) > MAX_NAMED
                    else ""
                )
                raise UnreadableCredentials(
                    f"{len(unreadable)} stored credential(s) cannot be decrypted with any key "
                    f"in BM_CREDENTIAL_KEYS: {named}{more}. Nothing was changed. Add the key "
                    "they were encrypted with, or set those credentials again through the API."
                )
    finally:
        await engine.dispose()
    log.info("credentials re-encrypted: %s", report.summary().replace("\n", "; "))
    return report


async def _rotate(
    session: AsyncSession,
    model: type[Database] | type[Destination],
    column: InstrumentedAttribute[bytes | None],
    every_key: CredentialCipher,
    newest_only: CredentialCipher,
) -> Counts:
    counts = Counts()
    rows = await session.execute(select(model.id, column).where(column.is_not(None)))
    for row_id, token in rows.all():
        if token is None:
            continue
        text = token.decode("ascii", errors="replace")
        try:
            newest_only.decrypt(text)
        except CredentialError:
            pass
        else:
            counts.current += 1
            continue
        try:
            rotated = every_key.rotate(text)
        except CredentialError:
            counts.unreadable.append(str(row_id))
            continue
        await session.execute(
            update(model).where(model.id == row_id).values({column.key: rotated.encode("ascii")})
        )
        counts.rotated += 1
    return counts

"""What we store on a destination and how it goes away: the key layout (so sweeps
touch only our own files), the manifest beside each artifact (read back by
re-indexing), and deleting a backup's copies (shared by the API's delete and the
storage service's retention).

Layout (written by the executor)::

    <project slug>/<database slug>/<UTC yyyy>/<mm>/<dd>/<yyyymmddTHHMMSSZ>-<backup id>.<ext>
    <same key>.manifest.json
    <same directory>/.partial-<file name>.<8 hex>      (a write in progress, or a crash leftover)
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel, ConfigDict
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from proto.backup_events import BackupDeleted
from services.common.db.enums import CopyStatus, VerifyStatus
from services.common.db.models import Backup, BackupCopy, Destination
from services.common.destinations import driver_for
from services.common.destinations.base import DestinationError, Driver
from services.common.destinations.local import TEMP_PREFIX
from services.common.retention import Candidate

MANIFEST_SUFFIX: Final = ".manifest.json"

_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_ARTIFACT = re.compile(
    r"(?P<project>[a-z0-9][a-z0-9-]*)/(?P<database>[a-z0-9-]+)/"
    r"\d{4}/\d{2}/\d{2}/\d{8}T\d{6}Z-(?P<id>" + _UUID + r")\.[a-z0-9]+(?:\.[a-z0-9]+)*"
)
_PARTIAL = re.compile(re.escape(TEMP_PREFIX) + r"(?P<name>.+)\.[0-9a-f]{8}")


class KeyKind(StrEnum):
    ARTIFACT = "artifact"
    MANIFEST = "manifest"
    PARTIAL = "partial"


@dataclass(frozen=True)
class OurKey:
    """A key of ours on a destination, and what it is."""

    key: str
    kind: KeyKind
    artifact_key: str
    backup_id: uuid.UUID
    project_slug: str


def manifest_key(artifact_key: str) -> str:
    return artifact_key + MANIFEST_SUFFIX


def parse_key(key: str) -> OurKey | None:
    """What ``key`` is, if it follows our layout; ``None`` for anything else (which
    no sweep ever touches)."""
    directory, _, name = key.rpartition("/")
    kind = KeyKind.ARTIFACT
    if name.startswith(TEMP_PREFIX):
        partial = _PARTIAL.fullmatch(name)
        if partial is None:
            return None
        name = partial["name"]
        kind = KeyKind.PARTIAL
    base = f"{directory}/{name}"
    if base.endswith(MANIFEST_SUFFIX):
        base = base[: -len(MANIFEST_SUFFIX)]
        kind = KeyKind.MANIFEST if kind is KeyKind.ARTIFACT else kind
    match = _ARTIFACT.fullmatch(base)
    if match is None:
        return None
    return OurKey(key, kind, base, uuid.UUID(match["id"]), match["project"])


# -- manifests ------------------------------------------------------------------------


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ManifestProject(_Lenient):
    id: uuid.UUID
    slug: str
    name: str


class ManifestDatabase(_Lenient):
    id: uuid.UUID
    name: str
    engine: str
    database: str = ""


class ManifestCompression(_Lenient):
    algorithm: str = "none"
    level: int | None = None


class ManifestEncryption(_Lenient):
    algorithm: str = "none"
    recipient: str | None = None


class Manifest(_Lenient):
    """The manifest the executor writes beside an artifact (format version 1);
    unknown fields are ignored so a newer writer's manifests still read."""

    format_version: int
    backup_id: uuid.UUID
    project: ManifestProject
    database: ManifestDatabase
    trigger: str
    schedule_id: uuid.UUID | None = None
    slot_at: datetime | None = None
    server_version: str = ""
    tool_version: str = ""
    format: str = ""
    compression: ManifestCompression = ManifestCompression()
    encryption: ManifestEncryption = ManifestEncryption()
    artifact_key: str
    size: int
    raw_size: int | None = None
    sha256: str
    started_at: datetime | None = None
    finished_at: datetime

    def as_stored(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# -- deleting a backup's copies -------------------------------------------------------


@dataclass
class Removal:
    """What deleting a backup's copies did: the copies whose artifact and manifest are
    gone, and the destinations that refused (the row must then stay)."""

    removed: list[BackupCopy] = field(default_factory=list)
    failed: list[tuple[Destination, str]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.failed

    @property
    def removed_bytes(self) -> int:
        return sum(copy.size_bytes or 0 for copy in self.removed)


async def copies_with_destinations(
    session: AsyncSession, backup_id: uuid.UUID
) -> list[tuple[BackupCopy, Destination]]:
    rows = await session.execute(
        select(BackupCopy, Destination)
        .join(Destination, Destination.id == BackupCopy.destination_id)
        .where(BackupCopy.backup_id == backup_id)
        .order_by(Destination.created_at)
    )
    return [(row[0], row[1]) for row in rows]


async def remove_artifact(driver: Driver, key: str) -> bool:
    """Delete an artifact and then its manifest; False when the artifact was not there."""
    existed = await driver.delete(key)
    await driver.delete(manifest_key(key))
    return existed


async def remove_copies(copies: Iterable[tuple[BackupCopy, Destination]]) -> Removal:
    """Delete the artifact and manifest of every copy; a destination that fails is
    reported, not raised, so the caller decides (the API answers 409, retention
    keeps the row and tries again on its next pass)."""
    removal = Removal()
    for copy, destination in copies:
        try:
            await remove_artifact(driver_for(destination), copy.artifact_key)
        except (DestinationError, OSError) as exc:
            removal.failed.append((destination, str(exc)))
            continue
        removal.removed.append(copy)
    return removal


def deleted_events(
    backup: Backup,
    project_id: uuid.UUID,
    removal: Removal,
    *,
    row_deleted: bool,
    reason: str,
    deleted_by: uuid.UUID | None = None,
    copy_reasons: Mapping[uuid.UUID, str] | None = None,
) -> list[BackupDeleted]:
    """``bm.v1.backup.deleted`` for what went: one event (no destination) when the row
    and every copy went, else one per removed copy (with its own reason from
    ``copy_reasons`` when given). None for rows without artifact."""
    if backup.artifact_key is None or (not row_deleted and not removal.removed):
        return []

    def event(destination_id: uuid.UUID | None, size: int) -> BackupDeleted:
        why = (copy_reasons or {}).get(destination_id, reason) if destination_id else reason
        return BackupDeleted(
            backup_id=backup.id, project_id=project_id, database_id=backup.database_id,
            schedule_id=backup.schedule_id, artifact_key=backup.artifact_key or "-",
            destination_id=destination_id, size_bytes=size, reason=why[:4000],
            deleted_by=deleted_by,
        )  # fmt: skip

    if row_deleted:
        return [event(None, removal.removed_bytes or backup.bytes_out or 0)]
    return [event(copy.destination_id, copy.size_bytes or 0) for copy in removal.removed]


# -- what retention looks at -----------------------------------------------------------


async def retention_candidates(
    session: AsyncSession, database_id: uuid.UUID, *, schedule_id: uuid.UUID | None = None
) -> dict[uuid.UUID | None, list[Candidate]]:
    """The database's backups as retention candidates, grouped by schedule (``None``:
    manual runs and runs of deleted schedules); only ``schedule_id``'s when given.
    Each candidate names the destinations holding a stored copy of it (retention
    decides per destination). The storage service and the API's preview both read
    candidates through this."""
    where = [Backup.database_id == database_id]
    if schedule_id is not None:
        where.append(Backup.schedule_id == schedule_id)
    copies: dict[uuid.UUID, list[tuple[uuid.UUID, CopyStatus, datetime | None]]] = {}
    for backup_id, destination_id, status, checked_at in await session.execute(
        select(BackupCopy.backup_id, BackupCopy.destination_id, BackupCopy.status,
               BackupCopy.checked_at)
        .join(Backup, Backup.id == BackupCopy.backup_id)
        .where(*where)
    ):  # fmt: skip
        copies.setdefault(backup_id, []).append((destination_id, status, checked_at))
    groups: dict[uuid.UUID | None, list[Candidate]] = {}
    for row in await session.execute(
        select(Backup.id, Backup.status, Backup.queued_at, Backup.finished_at,
               Backup.verify_status, Backup.schedule_id).where(*where)
    ):  # fmt: skip
        own = copies.get(row.id, [])
        stored = frozenset(d for d, status, _ in own if status is CopyStatus.STORED)
        broken = [at for _, status, at in own if status is not CopyStatus.STORED and at]
        candidate = Candidate(
            id=row.id, status=row.status, finished_at=row.finished_at or row.queued_at,
            verified=row.verify_status is VerifyStatus.PASSED, usable=bool(stored),
            broken_at=max(broken) if broken else None, stored_on=stored,
        )  # fmt: skip
        groups.setdefault(row.schedule_id, []).append(candidate)
    return groups

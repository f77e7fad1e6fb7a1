"""Re-index: rebuild backup rows from the manifests on a local destination, so a lost
metadata DB does not lose the backups.

    python -m services.manage reindex --destination-path /srv/backups [--project shop]

For each ``<key>.manifest.json`` of our layout whose artifact is there (at the size
the manifest states) it makes, where missing: the destination row for the
directory; the project (same id, slug and name); the database (same id and name,
engine and database name, but no connection settings: its host is
``reindexed.invalid`` until a person sets host and credentials); the backup row
(``succeeded``, same id, key, sizes, checksum and times, its manifest) and its copy
on this destination. Rows that exist are left alone, so running it again, or on a
second destination holding the same backups (which adds their copies), is safe.
Schedules are not in manifests: re-indexed backups are linked to a schedule only if
a schedule with their recorded id exists; otherwise retention keeps them until a
person deletes them.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.artifacts import KeyKind, Manifest, parse_key
from services.common.db.engine import create_engine, session_factory
from services.common.db.enums import (
    BackupStatus,
    BackupTrigger,
    Compression,
    CopyStatus,
    DatabaseEngine,
    DestinationKind,
    Encryption,
)
from services.common.db.models import (
    Backup,
    BackupCopy,
    Database,
    Destination,
    Project,
    Schedule,
)
from services.common.destinations.base import DestinationError, ObjectInfo
from services.common.destinations.local import LocalDriver
from services.common.errors import ConfigError
from services.common.migrate import upgrade

log = logging.getLogger(__name__)

REINDEXED_HOST: Final = "reindexed.invalid"
"""The host of a database re-created from manifests (``.invalid`` never resolves)."""
DEFAULT_PORTS: Final = {
    DatabaseEngine.POSTGRESQL: 5432,
    DatabaseEngine.MYSQL: 3306,
    DatabaseEngine.MARIADB: 3306,
    DatabaseEngine.MONGODB: 27017,
    DatabaseEngine.REDIS: 6379,
}


@dataclass
class ReindexReport:
    path: Path
    destination_id: uuid.UUID | None = None
    manifests: int = 0
    backups_created: int = 0
    backups_existing: int = 0
    copies_added: int = 0
    projects_created: list[str] = field(default_factory=list)
    databases_created: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"re-indexed {self.path} (destination {self.destination_id}): "
            f"{self.manifests} manifest(s), {self.backups_created} backup(s) added, "
            f"{self.backups_existing} already known ({self.copies_added} copies added)"
        ]
        if self.projects_created:
            lines.append("projects created: " + ", ".join(self.projects_created))
        if self.databases_created:
            lines.append(
                "databases created (set host and credentials before backing up or "
                "restoring into them): " + ", ".join(self.databases_created)
            )
        lines += [f"skipped: {problem}" for problem in self.problems]
        return "\n".join(lines)


async def reindex(
    database_url: str, path: Path, *, projects: Sequence[str] = (), migrate: bool = True
) -> ReindexReport:
    root = await asyncio.to_thread(_absolute, path)
    if not await asyncio.to_thread(root.is_dir):
        raise ConfigError(f"{root} is not a directory: give the destination's directory")
    if migrate:
        await upgrade(database_url)
    report = ReindexReport(root)
    driver = LocalDriver(root)
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    try:
        async with sessions() as session, session.begin():
            destination = await _destination(session, root)
        report.destination_id = destination.id
        manifests: list[ObjectInfo] = []
        async for info in driver.list():
            parsed = parse_key(info.key)
            if parsed is None or parsed.kind is not KeyKind.MANIFEST:
                continue
            if projects and parsed.project_slug not in projects:
                continue
            manifests.append(info)
        for info in manifests:
            report.manifests += 1
            await _one(sessions, driver, destination, info, report)
    finally:
        await engine.dispose()
    return report


async def _one(
    sessions: async_sessionmaker[AsyncSession],
    driver: LocalDriver,
    destination: Destination,
    info: ObjectInfo,
    report: ReindexReport,
) -> None:
    parsed = parse_key(info.key)
    assert parsed is not None
    try:
        manifest = Manifest.model_validate_json(await driver.read_bytes(info.key))
        stat = await driver.stat(parsed.artifact_key)
    except ValidationError as exc:
        report.problems.append(f"{info.key}: not a readable manifest ({exc.error_count()} errors)")
        return
    except DestinationError as exc:
        report.problems.append(f"{info.key}: {exc}")
        return
    if manifest.backup_id != parsed.backup_id:
        report.problems.append(f"{info.key}: the manifest is of backup {manifest.backup_id}")
        return
    if stat.size != manifest.size:
        report.problems.append(
            f"{parsed.artifact_key}: {stat.size} bytes, the manifest says {manifest.size}"
        )
        return
    try:
        engine = DatabaseEngine(manifest.database.engine)
    except ValueError:
        report.problems.append(f"{info.key}: unknown engine {manifest.database.engine!r}")
        return
    try:
        async with sessions() as session, session.begin():
            await _record(session, manifest, engine, parsed.artifact_key, destination, report)
    except IntegrityError as exc:
        report.problems.append(f"{info.key}: conflicts with existing rows ({exc.orig})")


def _absolute(path: Path) -> Path:
    return path.expanduser().absolute()


def _points_at(destination: Destination, root: Path) -> bool:
    configured = destination.config.get("path")
    return isinstance(configured, str) and _absolute(Path(configured)) == root


async def _destination(session: AsyncSession, root: Path) -> Destination:
    for destination in await session.scalars(
        select(Destination).where(Destination.kind == DestinationKind.LOCAL)
    ):
        if _points_at(destination, root):
            return destination
    destination = Destination(
        name=f"re-indexed {root.name or root}"[:200], kind=DestinationKind.LOCAL,
        config={"path": str(root)}, project_id=None,
    )  # fmt: skip
    session.add(destination)
    await session.flush()
    return destination


async def _record(
    session: AsyncSession, manifest: Manifest, engine: DatabaseEngine, key: str,
    destination: Destination, report: ReindexReport,
) -> None:  # fmt: skip
    backup = await session.get(Backup, manifest.backup_id)
    if backup is not None:
        report.backups_existing += 1
        if await session.get(BackupCopy, (backup.id, destination.id)) is None:
            session.add(_copy(manifest, key, destination))
            report.copies_added += 1
        return
    project = await _project(session, manifest, report)
    database = await _database(session, manifest, engine, project, report)
    schedule = await session.get(Schedule, manifest.schedule_id) if manifest.schedule_id else None
    started = manifest.started_at or manifest.finished_at
    session.add(
        Backup(
            id=manifest.backup_id, database_id=database.id,
            schedule_id=schedule.id if schedule and schedule.database_id == database.id else None,
            trigger=_enum(BackupTrigger, manifest.trigger) or BackupTrigger.MANUAL,
            status=BackupStatus.SUCCEEDED, slot_at=manifest.slot_at, queued_at=started,
            started_at=started, finished_at=manifest.finished_at, heartbeat_at=None, attempts=1,
            bytes_in=manifest.raw_size, bytes_out=manifest.size, sha256=manifest.sha256,
            artifact_key=key, compression=_enum(Compression, manifest.compression.algorithm),
            encryption=_enum(Encryption, manifest.encryption.algorithm),
            manifest=manifest.as_stored(),
            warning=f"re-indexed from {destination.name}; the run's log was not kept",
        )
    )  # fmt: skip
    await session.flush()
    session.add(_copy(manifest, key, destination))
    report.backups_created += 1
    report.copies_added += 1


def _copy(manifest: Manifest, key: str, destination: Destination) -> BackupCopy:
    return BackupCopy(
        backup_id=manifest.backup_id, destination_id=destination.id, artifact_key=key,
        status=CopyStatus.STORED, size_bytes=manifest.size, sha256=manifest.sha256,
        stored_at=manifest.finished_at,
    )  # fmt: skip


async def _project(session: AsyncSession, manifest: Manifest, report: ReindexReport) -> Project:
    found = await session.get(Project, manifest.project.id)
    if found is None:
        found = await session.scalar(select(Project).where(Project.slug == manifest.project.slug))
    if found is not None:
        return found
    project = Project(
        id=manifest.project.id, name=manifest.project.name[:200], slug=manifest.project.slug,
        description="Re-created by re-indexing backups; check its members and databases.",
    )  # fmt: skip
    session.add(project)
    await session.flush()
    report.projects_created.append(project.slug)
    return project


async def _database(
    session: AsyncSession, manifest: Manifest, engine: DatabaseEngine, project: Project,
    report: ReindexReport,
) -> Database:  # fmt: skip
    found = await session.get(Database, manifest.database.id)
    if found is None:
        found = await session.scalar(
            select(Database).where(
                Database.project_id == project.id, Database.name == manifest.database.name
            )
        )
    if found is not None:
        return found
    database = Database(
        id=manifest.database.id, project_id=project.id, name=manifest.database.name[:200],
        engine=engine, host=REINDEXED_HOST, port=DEFAULT_PORTS[engine],
        database_name=manifest.database.database, username="", encrypted_password=None,
        options={},
    )  # fmt: skip
    session.add(database)
    await session.flush()
    report.databases_created.append(f"{project.slug}/{database.name}")
    return database


E = TypeVar("E", BackupTrigger, Compression, Encryption)


def _enum(kind: type[E], value: str) -> E | None:
    try:
        return kind(value)
    except ValueError:
        return None

"""What happened: backup runs, their copies on destinations, and restores.

Rows are created ``queued`` by the API (manual) or the scheduler (scheduled, and
``missed``/``skipped`` slots); the executor writes runs and restores; the storage
service writes copies' health and deletes rows with their artifacts.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from services.common.db.base import Base, UuidPk
from services.common.db.enums import (
    BackupStatus,
    BackupTrigger,
    Compression,
    CopyStatus,
    Encryption,
    RestoreMode,
    RestoreSource,
    RestoreStatus,
    VerifyStatus,
)
from services.common.db.types import UTCDateTime, str_enum, utcnow

_RUNNING = text("status = 'running'")


class Backup(UuidPk, Base):
    """One row per run (or per missed / skipped slot)."""

    __tablename__ = "backups"
    __table_args__ = (
        # The scheduler records a slot with INSERT and treats a conflict as "already
        # recorded" (NULL schedule_id or slot_at never conflict).
        UniqueConstraint("schedule_id", "slot_at"),
        Index(None, "database_id", "started_at"),
        Index(None, "queued_at"),
        # Lists, newest first, read in order and never sorted: per database (with the
        # id, the list's tie-breaker, so a member's page is picked from the index
        # alone before its rows are read), and by status (everyone's, per database).
        Index(None, "database_id", "queued_at", "id"),
        Index(None, "status", "queued_at"),
        Index(None, "database_id", "status", "queued_at", "id"),
        # Never two runs of one database at once, across all executors: moving a
        # second row of the same database to 'running' fails with IntegrityError.
        Index(
            "ux_backups_running_database_id",
            "database_id",
            unique=True,
            sqlite_where=_RUNNING,
            postgresql_where=_RUNNING,
        ),
    )

    # Backups outlive nothing silently: a database with backups cannot be deleted
    # until retention or a person removed them (and their artifacts).
    database_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("databases.id", ondelete="RESTRICT"))
    schedule_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("schedules.id", ondelete="SET NULL")
    )
    trigger: Mapped[BackupTrigger] = mapped_column(str_enum(BackupTrigger))
    status: Mapped[BackupStatus] = mapped_column(
        str_enum(BackupStatus), default=BackupStatus.QUEUED
    )
    # The cron slot this run is for (UTC); None for manual runs.
    slot_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    requested_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )

    # queued_at is always set (also for missed/skipped rows): lists order by it.
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Bumped by the running executor; a 'running' row whose heartbeat is stale
    # belongs to a dead executor and may be failed by a sweep.
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    executor_id: Mapped[str | None] = mapped_column(String(128))

    bytes_in: Mapped[int | None] = mapped_column(BigInteger)
    bytes_out: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    # Relative key, the same on every destination (see backup_copies).
    artifact_key: Mapped[str | None] = mapped_column(String(1024))
    compression: Mapped[Compression | None] = mapped_column(str_enum(Compression))
    encryption: Mapped[Encryption | None] = mapped_column(str_enum(Encryption))

    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    log_tail: Mapped[str | None] = mapped_column(Text)  # redacted
    warning: Mapped[str | None] = mapped_column(Text)

    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    verify_status: Mapped[VerifyStatus | None] = mapped_column(str_enum(VerifyStatus))
    verify_message: Mapped[str | None] = mapped_column(Text)
    # The manifest written beside the artifact (engine/tool versions, counts, ...).
    manifest: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    copies: Mapped[list[BackupCopy]] = relationship(
        back_populates="backup", cascade="all, delete-orphan", passive_deletes=True, lazy="raise"
    )


class BackupCopy(Base):
    """One backup's artifact on one destination (each has its own fate)."""

    __tablename__ = "backup_copies"

    backup_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("backups.id", ondelete="CASCADE"), primary_key=True
    )
    # A destination that still holds copies cannot be deleted (RESTRICT).
    destination_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("destinations.id", ondelete="RESTRICT"), primary_key=True, index=True
    )
    artifact_key: Mapped[str] = mapped_column(String(1024))
    status: Mapped[CopyStatus] = mapped_column(str_enum(CopyStatus), default=CopyStatus.WRITING)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    stored_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Last time the integrity sweep re-hashed it.
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    backup: Mapped[Backup] = relationship(back_populates="copies", lazy="raise")


class Restore(UuidPk, Base):
    __tablename__ = "restores"
    __table_args__ = (
        Index(None, "target_database_id", "queued_at"),
        Index(None, "status"),
        Index(None, "queued_at"),
    )

    source: Mapped[RestoreSource] = mapped_column(
        str_enum(RestoreSource), default=RestoreSource.BACKUP
    )
    # History stays when the backup is deleted.
    backup_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("backups.id", ondelete="SET NULL"), index=True
    )
    # Where an uploaded dump waits for the executor (source = upload).
    upload_key: Mapped[str | None] = mapped_column(String(1024))
    target_database_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("databases.id", ondelete="SET NULL")
    )
    # The database name on the target server (may be new).
    target_name: Mapped[str] = mapped_column(String(255))
    mode: Mapped[RestoreMode] = mapped_column(str_enum(RestoreMode))
    status: Mapped[RestoreStatus] = mapped_column(
        str_enum(RestoreStatus), default=RestoreStatus.QUEUED
    )
    requested_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    bytes_in: Mapped[int | None] = mapped_column(BigInteger)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    log_tail: Mapped[str | None] = mapped_column(Text)  # redacted

"""What to back up, where to, and when: databases, destinations, schedules.

Written by the API service; the scheduler writes ``scheduler_cursor`` and the
``backups`` rows of the slots it fires, misses or skips.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from services.common.db.base import Base, Timestamps, UuidPk
from services.common.db.enums import (
    Compression,
    DatabaseEngine,
    DestinationKind,
    Encryption,
    OverlapPolicy,
    TlsMode,
    VerifyMode,
)
from services.common.db.types import UTCDateTime, json_dict, str_enum, utcnow

DEFAULT_TIMEOUT_S = 6 * 3600


class Database(UuidPk, Timestamps, Base):
    """A database to back up. The password is only ever stored as a Fernet token."""

    __tablename__ = "databases"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    # A project's databases go with it, unless backups still refer to them
    # (backups.database_id is RESTRICT): config cascades, data does not.
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    engine: Mapped[DatabaseEngine] = mapped_column(str_enum(DatabaseEngine))
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    # The database (or Redis db number, as text) on the server.
    database_name: Mapped[str] = mapped_column(String(255), default="")
    username: Mapped[str] = mapped_column(String(255), default="")
    # MultiFernet token of the password; None when the server needs none.
    encrypted_password: Mapped[bytes | None] = mapped_column(LargeBinary)
    tls_mode: Mapped[TlsMode] = mapped_column(str_enum(TlsMode), default=TlsMode.PREFER)
    # Extra dump options, validated against a per-engine allow-list by the API.
    options: Mapped[dict[str, Any]] = mapped_column(json_dict(), default=dict)


class Destination(UuidPk, Timestamps, Base):
    """Where artifacts are written. ``config`` holds non-secret settings
    (``{"path": ...}`` for local; bucket, prefix, endpoint for object stores);
    secrets such as access keys go in ``encrypted_secret`` (Fernet)."""

    __tablename__ = "destinations"

    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[DestinationKind] = mapped_column(str_enum(DestinationKind))
    config: Mapped[dict[str, Any]] = mapped_column(json_dict(), default=dict)
    encrypted_secret: Mapped[bytes | None] = mapped_column(LargeBinary)
    # None: usable by every project (set up by an admin).
    project_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)


# A schedule writes every run to each of its destinations. A destination still
# named by a schedule cannot be deleted (RESTRICT): the API answers 409.
schedule_destinations = Table(
    "schedule_destinations",
    Base.metadata,
    Column(
        "schedule_id",
        ForeignKey("schedules.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column(
        "destination_id",
        ForeignKey("destinations.id", ondelete="RESTRICT"),
        primary_key=True,
        index=True,
    ),
)


class Schedule(UuidPk, Timestamps, Base):
    """When to back up a database, and how.

    ``retention`` is ``{"keep_last": int?, "max_age_days": int?, "gfs": {"hourly":
    int?, "daily": int?, "weekly": int?, "monthly": int?, "yearly": int?}}``; missing
    or null parts do not apply. ``cron`` is 5 fields or an ``@daily``-style alias,
    evaluated in ``timezone`` (IANA name).
    """

    __tablename__ = "schedules"
    __table_args__ = (UniqueConstraint("database_id", "name"),)

    database_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("databases.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    cron: Mapped[str] = mapped_column(String(100))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    overlap_policy: Mapped[OverlapPolicy] = mapped_column(
        str_enum(OverlapPolicy), default=OverlapPolicy.SKIP
    )
    compression: Mapped[Compression] = mapped_column(
        str_enum(Compression), default=Compression.ZSTD
    )
    # None: the compressor's default level.
    compression_level: Mapped[int | None] = mapped_column(Integer)
    encryption: Mapped[Encryption] = mapped_column(str_enum(Encryption), default=Encryption.NONE)
    # age public key when encryption is on (a recipient, not a secret).
    encryption_recipient: Mapped[str | None] = mapped_column(Text)
    timeout_s: Mapped[int] = mapped_column(Integer, default=DEFAULT_TIMEOUT_S)
    retention: Mapped[dict[str, Any]] = mapped_column(json_dict(), default=dict)
    verify: Mapped[VerifyMode] = mapped_column(str_enum(VerifyMode), default=VerifyMode.OFF)

    destinations: Mapped[list[Destination]] = relationship(
        secondary=schedule_destinations, lazy="raise"
    )


class SchedulerCursor(Base):
    """The scheduler's own state: the last slot it fired (or recorded as missed or
    skipped) per schedule, and the next slot it will fire, for the API and stats."""

    __tablename__ = "scheduler_cursor"

    schedule_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("schedules.id", ondelete="CASCADE"), primary_key=True
    )
    last_slot_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_slot_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

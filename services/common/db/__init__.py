"""The metadata DB: models (``services.common.db.models``), enums, engine helpers.

Schema changes go through Alembic only (``services.common.migrate``).
"""

from __future__ import annotations

from services.common.db.base import Base
from services.common.db.engine import create_engine, normalize_url, ping, session_factory
from services.common.db.types import UTCDateTime, utcnow

__all__ = [
    "Base",
    "UTCDateTime",
    "create_engine",
    "normalize_url",
    "ping",
    "session_factory",
    "utcnow",
]

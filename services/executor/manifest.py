"""The manifest written beside every artifact: enough to understand and restore the
artifact without the metadata DB (and to rebuild its row by re-indexing)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

MANIFEST_SUFFIX = ".manifest.json"
FORMAT_VERSION = 1


def manifest_key(artifact_key: str) -> str:
    return artifact_key + MANIFEST_SUFFIX


def manifest_document(
    *,
    backup_id: str,
    project: dict[str, Any],
    database: dict[str, Any],
    trigger: str,
    schedule_id: str | None,
    slot_at: datetime | None,
    server_version: str,
    tool_version: str,
    dump_format: str,
    compression: dict[str, Any],
    artifact_key: str,
    size: int,
    raw_size: int,
    sha256: str,
    started_at: datetime,
    finished_at: datetime,
) -> str:
    """The manifest as JSON text. It never holds a secret: no host credentials, no
    password, only names and versions."""
    document = {
        "format_version": FORMAT_VERSION,
        "backup_id": backup_id,
        "project": project,
        "database": database,
        "trigger": trigger,
        "schedule_id": schedule_id,
        "slot_at": slot_at.isoformat() if slot_at else None,
        "server_version": server_version,
        "tool_version": tool_version,
        "format": dump_format,
        "compression": compression,
        "encryption": {"algorithm": "none", "recipient": None},
        "artifact_key": artifact_key,
        "size": size,
        "raw_size": raw_size,
        "sha256": sha256,
        "created_at": finished_at.isoformat(),
        "started_at": started_at.isoformat(),
        "finished_at": finished_at.isoformat(),
    }
    return json.dumps(document, indent=2, sort_keys=True)

"""Where an uploaded dump waits for its restore: ``<data dir>/uploads/<key name>``.

The API streams the request body into a ``.part`` file there and renames it, once
complete, to ``<restore id>-<sha256>.dump``; the restore job carries the key
``uploads/<that name>``. The executor checks the bytes against the digest in the
name before the restore tool sees them, and deletes the file when the restore ends.
API and executor must share the data directory (one machine, or a shared volume)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Final

UPLOADS: Final = "uploads"
_KEY = re.compile(r"uploads/([0-9a-f-]{36})-([0-9a-f]{64})\.dump")


class BadUploadKey(ValueError):
    """A key that is not one the API makes (never built into a path)."""


def uploads_dir(data_dir: Path) -> Path:
    return data_dir / UPLOADS


def upload_key(restore_id: uuid.UUID, sha256: str) -> str:
    return f"{UPLOADS}/{restore_id}-{sha256}.dump"


def partial_path(data_dir: Path, restore_id: uuid.UUID) -> Path:
    return uploads_dir(data_dir) / f"{restore_id}.part"


def parse_key(key: str) -> tuple[uuid.UUID, str]:
    """(restore id, sha256) of a key the API made; :class:`BadUploadKey` otherwise."""
    match = _KEY.fullmatch(key)
    if match is None:
        raise BadUploadKey(f"not an upload key: {key[:80]!r}")
    return uuid.UUID(match.group(1)), match.group(2)


def upload_path(data_dir: Path, key: str) -> Path:
    parse_key(key)
    return data_dir / key

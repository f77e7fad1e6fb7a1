"""Which pg_dump to run: the newest installed one whose major version is at least
the server's (``/usr/lib/postgresql/*/bin`` and PATH). Kept apart from the
PostgreSQL adapter, which imports asyncpg, so the executor can look for the tools
when it starts (``context.prepare_for_jobs``) without loading the driver: each
``pg_dump --version`` is a process start, better paid once than on the event loop
in the middle of the first backup."""

from __future__ import annotations

import glob
import re
import shutil
from functools import lru_cache
from pathlib import Path

from services.executor.adapters.base import DatabaseError, version_of

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
_VERSION = re.compile(r"(\d+)(?:\.(\d+))?")


def major_of(version: str) -> int:
    match = _VERSION.search(version)
    if match is None:
        raise ValueError(f"no version number in {version!r}")
    return int(match.group(1))


@lru_cache(maxsize=1)
def installed_pg_dumps() -> tuple[tuple[int, str, str], ...]:
    """(major, path, version text) of every pg_dump found, newest first."""
    candidates = [str(Path(d) / "pg_dump") for d in glob.glob(PG_BIN_GLOB)]
    on_path = shutil.which("pg_dump")
    if on_path:
        candidates.append(on_path)
    found: dict[str, tuple[int, str, str]] = {}
    for path in candidates:
        text = version_of(path)
        if text is None:
            continue
        real = str(Path(path).resolve())
        found.setdefault(real, (major_of(text.rsplit(" ", 1)[-1]), path, text))
    return tuple(sorted(found.values(), reverse=True))


def choose_pg_dump(server_version: str) -> tuple[str, str]:
    server_major = major_of(server_version)
    tools = installed_pg_dumps()
    fitting = [tool for tool in tools if tool[0] >= server_major]
    if not fitting:
        have = ", ".join(f"{major} ({path})" for major, path, _ in tools) or "none"
        raise DatabaseError(
            f"No pg_dump fits PostgreSQL server {server_version}: pg_dump must be version "
            f"{server_major} or newer; installed: {have}",
            code="tool_version_mismatch",
        )
    _, path, text = fitting[0]
    return path, text

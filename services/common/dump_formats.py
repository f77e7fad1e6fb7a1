"""Recognising a dump from its first bytes: the compression around it (zstd, gzip or
none) and the format inside, checked against the engine it is to be restored into.

The API checks an upload with this before it writes a byte of it; the executor uses
the same rules to choose the restore tool (``pg_restore`` or ``psql``). Rules:

| engine | accepted |
|---|---|
| postgresql | custom format (``PGDMP``), or plain SQL text |
| mysql, mariadb | SQL text (``mysqldump``/``mariadb-dump`` output or a script) |
| mongodb | a ``mongodump --archive`` stream (magic ``6d e2 99 81``) |
| redis | an RDB file (``REDIS`` and a 4-digit version) |

"SQL text" means: valid UTF-8 without NUL bytes whose first statement, after blank
lines and comments, starts with a SQL keyword (or a MySQL ``/*!…*/`` version comment).
"""

from __future__ import annotations

import re
import zlib
from typing import Final

import zstandard

from services.common.db.enums import Compression
from services.common.errors import BackupManagerError

HEAD_BYTES: Final = 64 * 1024
"""How much of the (decompressed) start of a dump is looked at."""
RAW_HEAD_BYTES: Final = 256 * 1024
"""How much of the (maybe compressed) start is read to get there: more than one zstd
block, so the first decompressed bytes are always in it."""

POSTGRES_CUSTOM: Final = "postgresql-custom"
POSTGRES_PLAIN: Final = "postgresql-plain"
SQL: Final = "sql"
MONGO_ARCHIVE: Final = "mongodump-archive"
REDIS_RDB: Final = "redis-rdb"

MONGO_MAGIC: Final = bytes.fromhex("6de29981")
_RDB = re.compile(rb"REDIS(\d{4})")
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_GZIP_MAGIC = b"\x1f\x8b"

SQL_KEYWORDS: Final = frozenset(
    {
        "alter", "analyze", "begin", "comment", "commit", "copy", "create", "delete",
        "delimiter", "do", "drop", "grant", "insert", "lock", "refresh", "rename", "replace",
        "revoke", "select", "set", "start", "truncate", "unlock", "update", "use", "vacuum",
        "with",
    }
)  # fmt: skip
_LEADING_NOISE = re.compile(
    r"(?:\s+|--[^\n]*(?:\n|$)|#[^\n]*(?:\n|$)|/\*(?![!M])(?:[^*]|\*(?!/))*\*/)*"
)
_FIRST_WORD = re.compile(r"(/\*M?!|\\restrict\b|[A-Za-z]+)")

WHAT: Final = {
    "postgresql": "a PostgreSQL custom-format dump (pg_dump -Fc) or a plain SQL script",
    "mysql": "an SQL script (mysqldump / mariadb-dump output)",
    "mariadb": "an SQL script (mysqldump / mariadb-dump output)",
    "mongodb": "a mongodump archive (mongodump --archive)",
    "redis": "a Redis RDB file",
}


class NotADump(BackupManagerError):
    """The bytes are not a dump this engine can restore; the message says what was
    expected."""

    code = "not_a_dump"


def detect_compression(head: bytes) -> Compression:
    if head.startswith(_ZSTD_MAGIC):
        return Compression.ZSTD
    if head.startswith(_GZIP_MAGIC):
        return Compression.GZIP
    return Compression.NONE


def inflate_head(head: bytes, limit: int = HEAD_BYTES) -> bytes:
    """Up to ``limit`` decompressed bytes from the start of a (maybe compressed)
    stream whose first bytes are ``head``; raises :class:`NotADump` when the
    compressed data is damaged."""
    compression = detect_compression(head)
    try:
        if compression is Compression.ZSTD:
            reader = zstandard.ZstdDecompressor().decompressobj()
            out = b""
            for start in range(0, len(head), 4096):  # stop as soon as there is enough
                out += reader.decompress(head[start : start + 4096])
                if len(out) >= limit:
                    break
            return out[:limit]
        if compression is Compression.GZIP:
            return zlib.decompressobj(31).decompress(head, limit)
    except (zstandard.ZstdError, zlib.error) as exc:
        raise NotADump(f"the {compression.value} data is damaged ({exc})") from None
    return head[:limit]


def recognise(engine: str, head: bytes, *, complete: bool = False) -> str:
    """The format of a decompressed dump that starts with ``head`` (``complete``:
    ``head`` is the whole dump), or :class:`NotADump` naming what was expected."""
    expected = WHAT.get(engine, engine)
    if not head:
        raise NotADump(f"the file is empty; expected {expected}")
    if engine == "postgresql":
        if head.startswith(b"PGDMP"):
            return POSTGRES_CUSTOM
        if looks_like_sql(head, complete=complete):
            return POSTGRES_PLAIN
    elif engine in ("mysql", "mariadb"):
        if looks_like_sql(head, complete=complete):
            return SQL
    elif engine == "mongodb":
        if head.startswith(MONGO_MAGIC):
            return MONGO_ARCHIVE
    elif engine == "redis" and _RDB.match(head):
        return REDIS_RDB
    raise NotADump(f"this is not {expected}")


def rdb_version(head: bytes) -> int | None:
    match = _RDB.match(head)
    return int(match.group(1)) if match else None


def looks_like_sql(head: bytes, *, complete: bool = False) -> bool:
    if b"\0" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if complete or exc.start < len(head) - 3:
            return False
        text = head[: exc.start].decode("utf-8")  # a character cut by the head's end
    text = text.removeprefix("\ufeff")
    noise = _LEADING_NOISE.match(text)
    rest = text[noise.end() :] if noise else text
    if not rest.strip():
        return complete  # only comments: an (empty) script if that was all of it
    word = _FIRST_WORD.match(rest)
    if word is None:
        return False
    token = word.group(1)
    return token.startswith(("/*", "\\")) or token.lower() in SQL_KEYWORDS

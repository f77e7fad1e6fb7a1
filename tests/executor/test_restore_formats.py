"""Recognising uploaded dumps from their first bytes: compression, then the format,
checked against the engine (pure functions, no servers)."""

from __future__ import annotations

import gzip
import os

import pytest
import zstandard

from services.common.dump_formats import (
    MONGO_ARCHIVE,
    POSTGRES_CUSTOM,
    POSTGRES_PLAIN,
    REDIS_RDB,
    SQL,
    NotADump,
    inflate_head,
    looks_like_sql,
    recognise,
)
from services.common.uploads import BadUploadKey, parse_key, upload_key

MYSQLDUMP = b"/*M!999999\\- enable the sandbox mode */ \n-- MariaDB dump 10.19\n"
PGPLAIN = b"--\n-- PostgreSQL database dump\n--\n\n\\restrict abc\n\nSET statement_timeout = 0;\n"


@pytest.mark.parametrize(
    ("engine", "head", "expected"),
    [
        ("postgresql", b"PGDMP\x01\x0e\x00", POSTGRES_CUSTOM),
        ("postgresql", PGPLAIN, POSTGRES_PLAIN),
        ("postgresql", b"\xef\xbb\xbfCREATE TABLE t (i int);", POSTGRES_PLAIN),
        ("mysql", MYSQLDUMP, SQL),
        ("mariadb", b"# comment\n/* block */ INSERT INTO t VALUES (1);", SQL),
        ("mongodb", bytes.fromhex("6de29981") + b"\x10\x00", MONGO_ARCHIVE),
        ("redis", b"REDIS0011\xfa", REDIS_RDB),
    ],
)
def test_dumps_are_recognised(engine: str, head: bytes, expected: str) -> None:
    assert recognise(engine, head) == expected


@pytest.mark.parametrize(
    ("engine", "head"),
    [
        ("postgresql", b""),
        ("postgresql", b"hello, this is not a dump"),
        ("postgresql", b"\x89PNG\r\n\x1a\n"),
        ("mysql", b"PGDMP\x01"),  # a PostgreSQL dump for a MySQL database
        ("mysql", b"SELECT 1;\x00\x01"),  # binary inside
        ("mongodb", b"REDIS0011"),
        ("redis", b"REDIS"),
        ("redis", os.urandom(64)),
    ],
)
def test_non_dumps_are_refused(engine: str, head: bytes) -> None:
    with pytest.raises(NotADump):
        recognise(engine, head)


def test_compressed_heads_are_inflated() -> None:
    data = PGPLAIN * 5000
    assert inflate_head(zstandard.ZstdCompressor().compress(data))[:100] == data[:100]
    assert inflate_head(gzip.compress(data), 1000) == data[:1000]
    assert inflate_head(data, 10) == data[:10]
    with pytest.raises(NotADump, match="gzip data is damaged"):
        inflate_head(b"\x1f\x8b" + os.urandom(100))


def test_sql_made_only_of_comments_is_a_script_only_when_complete() -> None:
    assert looks_like_sql(b"-- nothing here\n", complete=True)
    assert not looks_like_sql(b"-- nothing here\n" * 10)
    assert looks_like_sql("SELECT 'ü".encode()[:-1])  # a character cut by the head's end


def test_upload_keys_are_checked() -> None:
    import uuid

    restore_id = uuid.uuid4()
    key = upload_key(restore_id, "a" * 64)
    assert parse_key(key) == (restore_id, "a" * 64)
    for bad in ("uploads/../../etc/passwd", "/etc/passwd", key + "x", key.replace("a", "A")):
        with pytest.raises(BadUploadKey):
            parse_key(bad)

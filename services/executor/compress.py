"""Streaming compression of dump bytes: zstd (multi-threaded), gzip, or none.
Each chunk is compressed in a worker thread so the event loop keeps serving."""

from __future__ import annotations

import os
import zlib
from typing import Protocol

import zstandard

from services.common.db.enums import Compression

EXTENSIONS = {Compression.ZSTD: ".zst", Compression.GZIP: ".gz", Compression.NONE: ""}
DEFAULT_LEVELS = {Compression.ZSTD: 3, Compression.GZIP: 6}
MAX_ZSTD_THREADS = 4
ZSTD_JOB_SIZE = 1 << 20


class Compressor(Protocol):
    def compress(self, chunk: bytes) -> bytes: ...
    def flush(self) -> bytes: ...


class _Identity:
    def compress(self, chunk: bytes) -> bytes:
        return chunk

    def flush(self) -> bytes:
        return b""


class _Gzip:
    def __init__(self, level: int) -> None:
        self._z = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: gzip container

    def compress(self, chunk: bytes) -> bytes:
        return self._z.compress(chunk)

    def flush(self) -> bytes:
        return self._z.flush()


class _Zstd:
    def __init__(self, level: int, threads: int) -> None:
        # 1 MiB jobs: the default (8 MiB per job, several per worker) costs 60-180 MiB
        # of memory depending on the core count, for no gain in ratio.
        workers = min(os.cpu_count() or 1, MAX_ZSTD_THREADS) if threads < 0 else threads
        params = zstandard.ZstdCompressionParameters.from_level(
            level, threads=workers, job_size=ZSTD_JOB_SIZE if workers else 0
        )
        self._z = zstandard.ZstdCompressor(compression_params=params).compressobj()

    def compress(self, chunk: bytes) -> bytes:
        return self._z.compress(chunk)

    def flush(self) -> bytes:
        return self._z.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)


def compressor(algorithm: Compression, level: int | None, *, threads: int = -1) -> Compressor:
    if algorithm is Compression.ZSTD:
        return _Zstd(level if level is not None else DEFAULT_LEVELS[algorithm], threads)
    if algorithm is Compression.GZIP:
        return _Gzip(level if level is not None else DEFAULT_LEVELS[algorithm])
    return _Identity()


class Decompressor(Protocol):
    def decompress(self, chunk: bytes) -> bytes: ...


def decompressor(algorithm: Compression) -> Decompressor:
    if algorithm is Compression.ZSTD:
        return zstandard.ZstdDecompressor().decompressobj()
    if algorithm is Compression.GZIP:
        return zlib.decompressobj(31)

    class _Plain:
        def decompress(self, chunk: bytes) -> bytes:
            return chunk

    return _Plain()


def detect(head: bytes) -> Compression:
    """The compression of a stream, from its first bytes."""
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return Compression.ZSTD
    if head.startswith(b"\x1f\x8b"):
        return Compression.GZIP
    return Compression.NONE

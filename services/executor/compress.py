"""Streaming compression of dump bytes: zstd (multi-threaded), gzip, or none.

zstd compresses in worker threads of its own: ``compress()`` only copies what it
is given into its job buffer and returns, waiting (with the GIL released) only
while that buffer is full and every worker busy, which is the back-pressure the
pipeline wants. So the pipeline calls it on the event loop for each piece of the
dump as it comes (``inline``), with no thread round trip and no block of its own.
gzip compresses in the caller's thread: the pipeline gathers 1 MiB blocks and
compresses each in a worker thread, so the event loop keeps serving."""

from __future__ import annotations

import os
import zlib
from typing import Protocol

import zstandard

from services.common.db.enums import Compression

EXTENSIONS = {Compression.ZSTD: ".zst", Compression.GZIP: ".gz", Compression.NONE: ""}
DEFAULT_LEVELS = {Compression.ZSTD: 3, Compression.GZIP: 6}
MAX_ZSTD_THREADS = 4
ZSTD_JOB_SIZE = 512 << 10  # the smallest zstd allows
ZSTD_NO_OVERLAP = 1  # overlap_log: 1 = none, 0 = zstd's default, 9 = a whole window


class Compressor(Protocol):
    inline: bool  # compress() is quick: call it on the event loop, not in a thread

    def compress(self, chunk: bytes) -> bytes: ...
    def flush(self) -> bytes: ...


class _Identity:
    inline = True

    def compress(self, chunk: bytes) -> bytes:
        return chunk

    def flush(self) -> bytes:
        return b""


class _Gzip:
    inline = False

    def __init__(self, level: int) -> None:
        self._z = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: gzip container

    def compress(self, chunk: bytes) -> bytes:
        return self._z.compress(chunk)

    def flush(self) -> bytes:
        return self._z.flush()


class _Zstd:
    def __init__(self, level: int, threads: int) -> None:
        # Small jobs: the default (8 MiB per job, several per worker) costs 60-180 MiB
        # of memory depending on the core count; 512 KiB jobs hold about 6.5 MiB with
        # two workers (1 MiB jobs: 10 MiB). No overlap: by default each job first
        # re-reads the last 256 KiB of the one before (half of a 512 KiB job) to
        # match against; without it the same dumps compressed about 10 % faster and
        # no larger (docs/benchmarks.md).
        workers = min(os.cpu_count() or 1, MAX_ZSTD_THREADS) if threads < 0 else threads
        params = zstandard.ZstdCompressionParameters.from_level(
            level,
            threads=workers,
            job_size=ZSTD_JOB_SIZE if workers else 0,
            overlap_log=ZSTD_NO_OVERLAP if workers else 0,
        )
        self._z = zstandard.ZstdCompressor(compression_params=params).compressobj()
        self.inline = workers > 0  # single-threaded zstd compresses in the caller

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

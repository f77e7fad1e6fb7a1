"""How the executor's process uses memory: at most two glibc malloc arenas.

glibc gives each thread that allocates an arena of its own (up to eight per CPU),
and what a thread frees goes back to the arena it came from, where it stays. The
executor's worker threads (compression batches, writes, read-backs) each kept a
MiB or so that way: limiting the process to two arenas lowered the executor's
peak at 1 GiB by about 2 MiB (bench/backup_postgres.py), for no measurable cost in
time. The same as starting it with ``MALLOC_ARENA_MAX=2``; nothing happens where
the C library is not glibc."""

from __future__ import annotations

import ctypes

MALLOC_ARENAS = 2
M_ARENA_MAX = -8  # mallopt's parameter number for the arena limit (glibc malloc.h)


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Call before threads start allocating: an arena a thread has already been
    given stays in use. True when the limit was set."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_ARENA_MAX, arenas))

"""The executor's process keeps to two glibc malloc arenas (``executor.memory``):
its worker threads share them instead of each taking one of its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Six threads alive at once, each allocating; then glibc's own account of its
# arenas (malloc_info: one <heap> element per arena).
PROBE = """
import ctypes, sys, tempfile, threading
from services.executor.memory import limit_malloc_arenas
if sys.argv[1] == "limit":
    assert limit_malloc_arenas()
together = threading.Barrier(6)
def work():
    together.wait()
    kept = [bytearray(10_000) for _ in range(200)]
    together.wait()
threads = [threading.Thread(target=work) for _ in range(6)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
with tempfile.NamedTemporaryFile("r") as report:
    handle = ctypes.c_void_p(libc.fopen(report.name.encode(), b"w"))
    libc.malloc_info(0, handle)
    libc.fclose(handle)
    print(report.read().count("<heap nr="))
"""


def arenas(mode: str) -> int:
    result = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=REPO, capture_output=True,
                            text=True, check=True, timeout=60)  # fmt: skip
    return int(result.stdout.strip())


def test_threads_share_two_arenas() -> None:
    assert arenas("limit") <= 2
    assert arenas("default") > 2  # what the limit changes: one arena per thread

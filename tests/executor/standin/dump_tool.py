"""A stand-in dump tool for the executor's failure tests: it misbehaves on purpose
(dies halfway, stalls, never ends, prints garbage or an error) in ways a real tool
does only under conditions a test cannot arrange on demand."""

from __future__ import annotations

import os
import signal
import sys
import time

CHUNK = b"x" * 65536


def main(mode: str) -> int:
    out = sys.stdout.buffer
    if mode == "empty":
        return 0
    if mode == "garbage":
        out.write(b"hello, this is not a dump\n")
        return 0
    out.write(b"PGDMP")
    for _ in range(48):  # 3 MiB
        out.write(CHUNK)
    out.flush()
    if mode == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "stall":
        time.sleep(120)
    if mode == "slow":
        while True:
            out.write(CHUNK)
            out.flush()
            time.sleep(0.05)
    if mode == "stderr-error":
        sys.stderr.write("pg_dump: error: query failed: could not read block 7\n")
    if mode == "exit-code":
        sys.stderr.write("pg_dump: error: connection to server lost\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))

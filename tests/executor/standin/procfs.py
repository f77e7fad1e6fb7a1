"""What a process tree exposes through /proc: every argv and environment of a tool
and everything it started (its own session: the executor starts tools with
``start_new_session``)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class Exposed:
    pid: int
    cmdline: bytes
    environ: bytes

    def mentions(self, secret: str) -> bool:
        needle = secret.encode()
        return needle in self.cmdline or needle in self.environ


def _stat_fields(pid: int) -> tuple[int, int] | None:
    """(parent pid, session id) of ``pid``, or None when it is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces
    return int(fields[1]), int(fields[3])


def process_tree(root: int) -> list[int]:
    """``root`` and every live process descending from it or sharing its session."""
    parents: dict[int, int] = {}
    members: set[int] = {root}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None:
            continue
        parents[int(entry.name)] = fields[0]
        if fields[1] == root:
            members.add(int(entry.name))
    changed = True
    while changed:
        changed = False
        for pid, parent in parents.items():
            if parent in members and pid not in members:
                members.add(pid)
                changed = True
    return sorted(members)


def exposed(root: int) -> list[Exposed]:
    """cmdline and environ of the tree under ``root`` (processes that ended between
    listing and reading are left out)."""
    found = []
    for pid in process_tree(root):
        with contextlib.suppress(OSError):
            found.append(
                Exposed(
                    pid,
                    (PROC / str(pid) / "cmdline").read_bytes(),
                    (PROC / str(pid) / "environ").read_bytes(),
                )
            )
    return found

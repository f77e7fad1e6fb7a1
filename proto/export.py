"""Export one JSON Schema per subject to ``proto/schemas/`` for outside subscribers.

    python -m proto.export           # (re)write the schemas, remove stale ones
    python -m proto.export --check   # exit 1 listing files that are stale

``<subject>.json`` describes the message on that subject; a request's reply is
described by ``<subject>.reply.json``. The schemas describe what producers send (every
field present, ``null`` where unset) and allow additional properties, because a newer
v1 producer may add optional fields.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from proto import subjects
from proto.base import Envelope, Event, Job, Request
from proto.registry import MODELS, REPLIES

SCHEMA_DIR = Path(__file__).parent / "schemas"
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _kind(model: type[Envelope]) -> str:
    for base, kind in ((Job, "job"), (Event, "event"), (Request, "request")):
        if issubclass(model, base):
            return kind
    return "reply"


def _schema(model: type[Envelope], subject: str, *, reply: bool) -> dict[str, Any]:
    schema: dict[str, Any] = {"$schema": DIALECT}
    schema.update(model.model_json_schema(mode="serialization"))
    schema["x-bm-kind"] = _kind(model)
    if reply:
        schema["x-bm-reply-to"] = subject
    else:
        schema["x-bm-subject"] = subject
        schema["x-bm-stream"] = subjects.stream_of(subject)
    return schema


def render() -> dict[str, str]:
    """File name -> file content for every schema."""
    files: dict[str, str] = {}
    for subject, model in MODELS.items():
        files[f"{subject}.json"] = _dump(_schema(model, subject, reply=False))
    for subject, reply_model in REPLIES.items():
        files[f"{subject}.reply.json"] = _dump(_schema(reply_model, subject, reply=True))
    return dict(sorted(files.items()))


def _dump(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def stale_files(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of schema files that are missing, differ, or belong to no subject."""
    wanted = render()
    present = {p.name for p in directory.glob("*.json")} if directory.is_dir() else set()
    stale = [
        name
        for name, text in wanted.items()
        if name not in present or (directory / name).read_text(encoding="utf-8") != text
    ]
    stale.extend(sorted(present - wanted.keys()))
    return stale


def write(directory: Path = SCHEMA_DIR) -> list[str]:
    """Bring ``directory`` up to date; return the names written or removed."""
    changed = stale_files(directory)
    directory.mkdir(parents=True, exist_ok=True)
    wanted = render()
    for name in changed:
        path = directory / name
        if name in wanted:
            path.write_text(wanted[name], encoding="utf-8")
        else:
            path.unlink()
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proto.export", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only report stale files")
    parser.add_argument("--dir", type=Path, default=SCHEMA_DIR, help="schema directory")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.dir)
        if stale:
            print(
                f"{len(stale)} schema file(s) in {args.dir} are stale; "
                "run `python -m proto.export`:",
                file=sys.stderr,
            )
            for name in stale:
                print(f"  {name}", file=sys.stderr)
            return 1
        print(f"{len(render())} schema files in {args.dir} are up to date")
        return 0
    changed = write(args.dir)
    for name in changed:
        print(f"updated {args.dir / name}")
    print(f"{len(render())} schema files in {args.dir}, {len(changed)} updated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

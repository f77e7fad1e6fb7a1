"""Removing secrets from text we keep or show (tool stderr, error messages)."""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "********"
# key=value / key: value pairs whose value is a secret, in URLs and tool output.
_PAIRS = re.compile(
    r"(?i)\b(password|passwd|pwd|secret|token|auth|requirepass)(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|\S+)"
)
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s]+):([^@\s]+)@")


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}:{MASK}@", text)
    return _PAIRS.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)

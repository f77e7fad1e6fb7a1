"""Credential keys and the JWT secret: where they come from, and when to refuse.

Production: every secret must be given (environment or key file); a missing or
placeholder value stops the service with a message naming the variable.
Development: missing secrets are generated once, stored 0600 in the data dir and
shared by every process that uses the same data dir.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet

from services.common.errors import ConfigError
from services.common.settings import Settings

log = logging.getLogger(__name__)

PLACEHOLDERS = frozenset(
    {"", "changeme", "change-me", "change_me", "secret", "placeholder", "example", "xxx", "todo"}
)
CREDENTIAL_KEYS_FILE = "credential.keys"
JWT_SECRET_FILE = "jwt.secret"  # noqa: S105 - a file name
MIN_JWT_SECRET_LENGTH = 32


@dataclass(frozen=True)
class Secrets:
    credential_keys: tuple[str, ...]  # newest first
    jwt_secret: str

    def __repr__(self) -> str:
        return f"Secrets(credential_keys=<{len(self.credential_keys)} keys>, jwt_secret=<hidden>)"


def resolve_secrets(settings: Settings) -> Secrets:
    keys = _credential_keys(settings)
    jwt_secret = _jwt_secret(settings)
    return Secrets(credential_keys=keys, jwt_secret=jwt_secret)


def is_placeholder(value: str) -> bool:
    return value.strip().lower() in PLACEHOLDERS


def _credential_keys(settings: Settings) -> tuple[str, ...]:
    variable = "BM_CREDENTIAL_KEYS"
    keys = tuple(key.get_secret_value() for key in settings.credential_keys)
    if not keys and settings.credential_keys_file is not None:
        variable = "BM_CREDENTIAL_KEYS_FILE"
        keys = _read_key_file(settings.credential_keys_file)
    if not keys and not settings.is_production:
        path = settings.data_dir / CREDENTIAL_KEYS_FILE
        text = _generate_once(path, lambda: Fernet.generate_key().decode())
        keys = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not keys:
        raise ConfigError(
            f"{variable} is not set: production mode needs at least one Fernet key "
            "(generate one with: python -m services.manage generate-key)"
        )
    for index, key in enumerate(keys):
        if is_placeholder(key):
            raise ConfigError(f"{variable} holds a placeholder value at position {index + 1}")
        try:
            Fernet(key.encode())
        except ValueError:
            raise ConfigError(
                f"{variable} position {index + 1} is not a valid Fernet key "
                "(32 url-safe base64-encoded bytes)"
            ) from None
    return keys


def _jwt_secret(settings: Settings) -> str:
    value = settings.jwt_secret.get_secret_value() if settings.jwt_secret else ""
    if not value and not settings.is_production:
        value = _generate_once(
            settings.data_dir / JWT_SECRET_FILE, lambda: secrets.token_urlsafe(48)
        ).strip()
    if not value or is_placeholder(value):
        raise ConfigError("BM_JWT_SECRET is missing or a placeholder: set a random secret")
    if settings.is_production and len(value) < MIN_JWT_SECRET_LENGTH:
        raise ConfigError(f"BM_JWT_SECRET is too short: use at least {MIN_JWT_SECRET_LENGTH} chars")
    return value


def _read_key_file(path: Path) -> tuple[str, ...]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(
            f"BM_CREDENTIAL_KEYS_FILE {path} cannot be read: {exc.strerror}"
        ) from None
    return tuple(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


def _generate_once(path: Path, make: Callable[[], str]) -> str:
    """Create ``path`` (0600) with a generated value unless it exists; return its content.

    Several services may start at once on one data dir: the value is written to a
    private temporary file and linked into place, so exactly one generator wins.
    """
    if path.exists():
        return path.read_text()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{make()}\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
            log.warning(
                "development mode: generated %s (0600); set the matching BM_ variable "
                "in production",
                path,
            )
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_text()

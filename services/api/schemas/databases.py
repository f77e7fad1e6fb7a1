from __future__ import annotations

import ipaddress
import re
import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    Field,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from services.api.schemas.common import Input, Name, Output
from services.api.web.pagination import PageQuery
from services.common.db.enums import DatabaseEngine, TlsMode
from services.common.dump_options import ALLOWED

MAX_PASSWORD_LENGTH = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LABEL = r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")


def check_host(value: str) -> str:
    """A host name or an IP address (IPv6 with or without brackets); never a URL, a
    path, a port, or anything starting with ``-``."""
    if not value:
        raise ValueError("give a host name or IP address")
    if "://" in value or "/" in value or "@" in value:
        raise ValueError("give a host name or IP address, not a URL or path")
    bare = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    if "%" not in bare:
        try:
            return str(ipaddress.ip_address(bare))
        except ValueError:
            pass
    if value.startswith("-"):
        raise ValueError("must not start with '-'")
    if len(value) > 253 or not _HOSTNAME.fullmatch(value):
        raise ValueError(
            "not a valid host name (letters, digits, '-' and '_' in dot-separated labels; "
            "no spaces, port or scheme)"
        )
    return value.lower()


def check_plain(value: str) -> str:
    """A name that may end up in a dump tool's argv or config file."""
    if value.startswith("-"):
        raise ValueError("must not start with '-'")
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


def check_password(secret: str) -> str:
    if not secret:
        raise ValueError("must not be empty (leave it out to keep the stored one)")
    if len(secret) > MAX_PASSWORD_LENGTH:
        raise ValueError(f"at most {MAX_PASSWORD_LENGTH} characters")
    if _CONTROL.search(secret):
        raise ValueError("must not contain control characters (newline, tab, NUL, ...)")
    return secret


Host = Annotated[str, Field(max_length=255), AfterValidator(check_host)]
Plain = Annotated[str, Field(max_length=255), AfterValidator(check_plain)]
# A str kept out of reprs, and not trimmed: spaces can be part of a password.
Password = Annotated[
    str,
    StringConstraints(strip_whitespace=False),
    AfterValidator(check_password),
    WithJsonSchema(
        {
            "type": "string",
            "format": "password",
            "writeOnly": True,
            "maxLength": MAX_PASSWORD_LENGTH,
        }
    ),
]


def _options_help() -> str:
    lines = ["Extra dump options from the engine's allow-list (anything else is refused):"]
    for engine, options in ALLOWED.items():
        names = ", ".join(f"{name} ({option.kind.value})" for name, option in options.items())
        lines.append(f"{engine.value}: {names or 'none'}")
    return "\n".join(lines)


class DatabaseFields(Input):
    name: Name = Field(description="How the database is called here; unique in its project")
    host: Host = Field(description="Host name or IP address of the server")
    port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Server port; default per engine (5432, 3306, 27017, 6379)",
    )
    database_name: Plain | None = Field(
        default=None,
        description="The database on the server; required except for redis, where it is "
        "the db index '0'..'15' (default '0')",
    )
    username: Plain = ""
    password: Password | None = Field(
        default=None,
        repr=False,
        description="Stored encrypted; never returned (see has_password)",
    )
    tls_mode: TlsMode | None = Field(
        default=None,
        description="Default: prefer (postgresql, mysql, mariadb), disable (mongodb, redis)",
    )
    options: dict[str, Any] = Field(default_factory=dict, description=_options_help())


class DatabaseCreate(DatabaseFields):
    project_id: uuid.UUID
    engine: DatabaseEngine


class DatabaseUpdate(DatabaseFields):
    """Replaces every field but the engine and project; the password is kept unless
    ``password`` or ``clear_password`` is given."""

    clear_password: bool = Field(
        default=False, description="Remove the stored password (the server needs none)"
    )

    @field_validator("clear_password")
    @classmethod
    def _not_both(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("password") is not None:
            raise ValueError("give either password or clear_password, not both")
        return value


class DatabaseOut(Output):
    id: uuid.UUID
    project_id: uuid.UUID
    name: str
    engine: DatabaseEngine
    host: str
    port: int
    database_name: str
    username: str
    has_password: bool
    tls_mode: TlsMode
    options: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class DatabaseListQuery(PageQuery):
    project_id: uuid.UUID | None = Field(default=None, description="Only this project's")
    engine: DatabaseEngine | None = Field(default=None, description="Only this engine's")

"""Users as the API shows them (never a password hash), and what admins send."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic_core import PydanticCustomError

from services.api.schemas.common import Input, Output
from services.api.web.pagination import PageQuery
from services.common.passwords import (
    MAX_PASSWORD_BYTES,
    MIN_PASSWORD_LENGTH,
    PasswordError,
    check_password_policy,
)

PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
"""No control characters (PostgreSQL refuses NUL in text; none belongs in these)."""


def _normalise_email(value: str) -> str:
    return value.strip().lower()


def _password_policy(value: str) -> str:
    try:
        check_password_policy(value)
    except PasswordError as exc:
        raise PydanticCustomError("password_policy", str(exc)) from None
    return value


Email = Annotated[EmailStr, AfterValidator(_normalise_email)]
"""A valid address, trimmed and lower-cased (the form every account is stored in)."""

NewPassword = Annotated[
    str,
    StringConstraints(strip_whitespace=False),  # a password is taken exactly as typed
    AfterValidator(_password_policy),
    Field(
        description=f"At least {MIN_PASSWORD_LENGTH} characters and at most "
        f"{MAX_PASSWORD_BYTES} bytes (UTF-8)",
        # The policy (one place, with its messages) checks; the schema tells clients.
        json_schema_extra={
            "format": "password",
            "writeOnly": True,
            "minLength": MIN_PASSWORD_LENGTH,
            "maxLength": MAX_PASSWORD_BYTES,
        },
    ),
]

GivenPassword = Annotated[
    str,
    StringConstraints(strip_whitespace=False, max_length=1024),
    Field(json_schema_extra={"format": "password", "writeOnly": True}),
]
"""A password being checked (no policy: a wrong one is simply wrong)."""


class UserOut(Output):
    id: uuid.UUID
    email: str
    is_admin: bool
    is_active: bool = Field(description="A disabled account can neither log in nor use tokens")
    last_login_at: datetime | None
    created_at: datetime
    updated_at: datetime


class UserCreate(Input):
    email: Email
    password: NewPassword
    is_admin: bool = False


def _absent_not_null(schema: dict[str, Any]) -> None:
    """Document the fields of a partial update as "omit to keep" (not nullable),
    and that at least one is needed."""
    schema["minProperties"] = 1
    for prop in schema.get("properties", {}).values():
        kept = [o for o in prop.pop("anyOf", []) if o != {"type": "null"}]
        if len(kept) == 1:
            for key, value in kept[0].items():
                prop.setdefault(key, value)
        elif kept:
            prop["anyOf"] = kept
        if "default" in prop and prop["default"] is None:
            del prop["default"]


class UserUpdate(Input):
    """Send only what changes (at least one field); an absent field stays as it is."""

    model_config = ConfigDict(json_schema_extra=_absent_not_null)

    is_admin: bool | None = None
    is_active: bool | None = Field(
        default=None, description="false disables the account and signs it out everywhere"
    )
    password: NewPassword | None = Field(
        default=None, description="A new password; signs the user out everywhere"
    )

    @model_validator(mode="after")
    def _something(self) -> UserUpdate:
        if self.is_admin is None and self.is_active is None and self.password is None:
            raise ValueError("give at least one of is_admin, is_active, password")
        return self


class UserListQuery(PageQuery):
    email: str | None = Field(
        default=None, max_length=320, pattern=PRINTABLE, description="Email contains (any case)"
    )
    is_admin: bool | None = None
    is_active: bool | None = None

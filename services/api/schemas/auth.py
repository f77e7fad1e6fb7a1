"""Logging in, sessions and API tokens."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StringConstraints

from services.api.schemas.common import Input, Name, Output
from services.api.schemas.users import PRINTABLE, Email, GivenPassword, NewPassword, UserOut
from services.api.web.pagination import PageQuery
from services.common.db.enums import ProjectRole

LoginEmail = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=320, pattern=PRINTABLE),
    AfterValidator(str.lower),
]
"""Not re-validated as an address: any account that exists may log in (the first
admin may well be ``admin@localhost``)."""

OpaqueToken = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_-]+$"
    ),
]


class RegisterRequest(Input):
    email: Email
    password: NewPassword


class LoginRequest(Input):
    email: LoginEmail
    password: GivenPassword


class RefreshRequest(Input):
    refresh_token: OpaqueToken


class LogoutRequest(Input):
    refresh_token: OpaqueToken | None = Field(
        default=None, description="The session to end (its refresh token)"
    )
    all_sessions: bool = Field(
        default=False,
        description="End every session of the account, on every device "
        "(the refresh token or an access token says whose)",
    )


class PasswordChange(Input):
    current_password: GivenPassword
    new_password: NewPassword


class LoginResponse(Output):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the scheme name
    expires_in: int = Field(description="Seconds the access token is valid")
    refresh_token: str = Field(description="Single use: /auth/refresh returns a new one")
    user: UserOut


class MeOut(UserOut):
    auth: Literal["session", "api_token"] = Field(description="What the call was made with")
    api_token_id: uuid.UUID | None = None
    token_project_id: uuid.UUID | None = Field(
        default=None, description="The one project the API token may reach"
    )
    token_role: ProjectRole | None = Field(
        default=None, description="The most the API token may do in a project"
    )


class ApiTokenCreate(Input):
    name: Annotated[Name, StringConstraints(max_length=100, pattern=PRINTABLE)]
    project_id: uuid.UUID | None = Field(
        default=None, description="Limit the token to this project (you must see it)"
    )
    role: ProjectRole | None = Field(
        default=None,
        description="Limit the token to this role (never more than your own in the project)",
    )
    expires_in_days: int | None = Field(
        default=None, ge=1, le=3650, description="Omit for a token that does not expire"
    )


class ApiTokenOut(Output):
    id: uuid.UUID
    name: str
    prefix: str = Field(description="The first characters of the token, to tell tokens apart")
    project_id: uuid.UUID | None
    role: ProjectRole | None
    created_at: datetime
    last_used_at: datetime | None = Field(description="Updated at most once a minute")
    expires_at: datetime | None
    revoked_at: datetime | None


class ApiTokenCreated(ApiTokenOut):
    token: str = Field(description="The token itself: shown this once, stored only hashed")


class ApiTokenListQuery(PageQuery):
    include_revoked: bool = False

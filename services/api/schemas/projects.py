from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import EmailStr, Field, model_validator

from services.api.schemas.common import Description, Input, Name, Output, Slug
from services.api.web.pagination import PageQuery
from services.common.db.enums import ProjectRole


class ProjectCreate(Input):
    name: Name
    slug: Slug | None = Field(
        default=None,
        description="Lower-case letters, digits and dashes; derived from the name when "
        "omitted. It starts every artifact key of the project and cannot change later.",
    )
    description: Description = ""


class ProjectUpdate(Input):
    name: Name
    description: Description = ""


class ProjectOut(Output):
    id: uuid.UUID
    name: str
    slug: str
    description: str
    created_at: datetime
    updated_at: datetime
    role: ProjectRole = Field(description="The caller's role in this project")


class ProjectListQuery(PageQuery):
    q: str | None = Field(default=None, max_length=200, description="Name contains (any case)")


class MemberAdd(Input):
    email: EmailStr | None = None
    user_id: uuid.UUID | None = None
    role: ProjectRole

    @model_validator(mode="after")
    def _one_identity(self) -> MemberAdd:
        if (self.email is None) == (self.user_id is None):
            raise ValueError("give either email or user_id")
        return self


class MemberUpdate(Input):
    role: ProjectRole


class MemberOut(Output):
    user_id: uuid.UUID
    email: str
    role: ProjectRole
    created_at: datetime

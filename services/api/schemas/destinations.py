"""Destinations: one request model per kind, told apart by ``kind`` (a discriminated
union). Only ``local`` can be created today; ``s3`` and ``azure`` are described so
clients and the OpenAPI document already have their shape."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    ModelWrapValidatorHandler,
    RootModel,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from services.api.schemas.common import Input, Name, Output
from services.api.web.pagination import PageQuery
from services.common.db.enums import DestinationKind

KINDS = ", ".join(kind.value for kind in DestinationKind)
LocalPath = Annotated[
    str,
    Field(
        min_length=1,
        max_length=4096,
        description="Absolute directory under one of the allowed roots "
        "(BM_LOCAL_DESTINATION_ROOTS); created (0700) when missing",
    ),
]


class _Common(Input):
    name: Name
    enabled: bool = Field(default=True, description="Disabled destinations take no new backups")


class LocalSettings(_Common):
    kind: Literal["local"]
    path: LocalPath


class S3Settings(_Common):
    """Not supported yet: creating one answers 422."""

    kind: Literal["s3"]
    bucket: Annotated[str, Field(min_length=3, max_length=63)]
    prefix: Annotated[str, Field(max_length=512)] = ""
    region: Annotated[str, Field(max_length=64)] = ""
    endpoint_url: Annotated[str, Field(max_length=512)] = ""
    access_key_id: Annotated[str, Field(max_length=256)] = ""
    secret_access_key: SecretStr | None = None


class AzureSettings(_Common):
    """Not supported yet: creating one answers 422."""

    kind: Literal["azure"]
    account_url: Annotated[str, Field(max_length=512)]
    container: Annotated[str, Field(min_length=3, max_length=63)]
    prefix: Annotated[str, Field(max_length=512)] = ""
    account_key: SecretStr | None = None


class LocalCreate(LocalSettings):
    project_id: uuid.UUID | None = Field(
        default=None, description="The owning project; null for a global destination (admin)"
    )


class S3Create(S3Settings):
    project_id: uuid.UUID | None = None


class AzureCreate(AzureSettings):
    project_id: uuid.UUID | None = None


def _flatten(exc: ValidationError, value: Any) -> ValidationError:
    """Error locations without the union's tag (``path``, not ``local.path``), and a
    missing or unknown ``kind`` reported on ``kind``."""
    tag = value.get("kind") if isinstance(value, dict) else None
    details: list[InitErrorDetails] = []
    for error in exc.errors(include_url=False):
        loc: tuple[int | str, ...] = tuple(error["loc"])
        message = error["msg"]
        if error["type"] == "union_tag_not_found":
            loc, message = ("kind",), f"Field required (one of {KINDS})"
        elif error["type"] == "union_tag_invalid":
            loc, message = ("kind",), f"unknown kind (use one of {KINDS})"
        elif loc and tag is not None and loc[0] == tag:
            loc = loc[1:]
        details.append(
            InitErrorDetails(
                type=PydanticCustomError(
                    error["type"], message.replace("{", "(").replace("}", ")")
                ),
                loc=loc,
                input=error.get("input"),
            )
        )
    return ValidationError.from_exception_data(exc.title, details)


class DestinationCreate(
    RootModel[Annotated[LocalCreate | S3Create | AzureCreate, Field(discriminator="kind")]]
):
    @model_validator(mode="wrap")
    @classmethod
    def _flat_errors(
        cls, value: Any, handler: ModelWrapValidatorHandler[DestinationCreate]
    ) -> DestinationCreate:
        try:
            return handler(value)
        except ValidationError as exc:
            raise _flatten(exc, value) from None


class DestinationUpdate(
    RootModel[Annotated[LocalSettings | S3Settings | AzureSettings, Field(discriminator="kind")]]
):
    """Replaces name, enabled and the kind's settings; the kind and the project stay."""

    @model_validator(mode="wrap")
    @classmethod
    def _flat_errors(
        cls, value: Any, handler: ModelWrapValidatorHandler[DestinationUpdate]
    ) -> DestinationUpdate:
        try:
            return handler(value)
        except ValidationError as exc:
            raise _flatten(exc, value) from None


class DestinationOut(Output):
    id: uuid.UUID
    name: str
    kind: DestinationKind
    project_id: uuid.UUID | None = Field(description="null: a global destination")
    enabled: bool
    path: str | None = Field(description="The directory (local destinations)")
    has_secret: bool = Field(description="Whether access secrets are stored (object stores)")
    is_default: bool = Field(description="The destination made at BM_STORAGE_DIR on first use")
    created_at: datetime
    updated_at: datetime


class DestinationListQuery(PageQuery):
    project_id: uuid.UUID | None = Field(
        default=None,
        description="Only destinations this project may use: its own and the global ones",
    )
    kind: DestinationKind | None = None

"""HTML forms: what was sent, parsed by the API's own request models, and the
errors to show beside each field (the same messages the JSON API gives)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from aiohttp import web
from multidict import MultiDict, MultiDictProxy
from pydantic import BaseModel, ValidationError

from services.api.web.endpoint import validation_fields
from services.api.web.errors import ApiError, ValidationFailed

M = TypeVar("M", bound=BaseModel)
SECRET_FIELDS = frozenset({"password", "new_password", "current_password", "csrf_token"})


class Form:
    """Submitted values (never a password: those are not shown back) and errors."""

    def __init__(self, data: Mapping[str, str] | MultiDictProxy[Any] | None = None) -> None:
        self.data: MultiDict[str] = MultiDict()
        for key, value in (data or {}).items():
            if isinstance(value, str):
                self.data.add(key, value)
        self.errors: dict[str, str] = {}
        self.message: str | None = None

    @classmethod
    async def read(cls, request: web.Request) -> Form:
        return cls(await request.post())

    def value(self, name: str, default: Any = "") -> str:
        if name in SECRET_FIELDS:
            return ""
        found = self.data.get(name)
        return str(default if found is None else found)

    def raw(self, name: str) -> str:
        """The value as sent, passwords included (for parsing, never for display)."""
        return self.data.get(name, "")

    def values(self, name: str) -> list[str]:
        return list(self.data.getall(name, []))

    def checked(self, name: str, default: bool = False) -> bool:
        if not self.data:
            return default
        return self.data.get(name) in {"on", "true", "1", "yes"}

    def optional(self, name: str) -> str | None:
        """The trimmed value, or None when it is empty (an optional field left out)."""
        value = self.raw(name).strip()
        return value or None

    def error(self, name: str) -> str | None:
        return self.errors.get(name)

    def fail(self, exc: ApiError, rename: Mapping[str, str] | None = None) -> None:
        """Take an API error's message and field errors (renamed to form fields)."""
        self.message = exc.message
        for key, why in exc.fields.items():
            self.errors.setdefault((rename or {}).get(key, key), why)
        if "body" in self.errors:
            self.message = f"{exc.message}: {self.errors.pop('body')}"

    @property
    def failed(self) -> bool:
        return bool(self.message or self.errors)


def parse(model: type[M], data: Mapping[str, Any]) -> M:
    """``data`` validated by an API request model; ValidationFailed like the API's."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed("Some fields are invalid", fields=validation_fields(exc)) from None

"""The storage service: retention, usage, reconciliation and integrity sweeps."""

from __future__ import annotations

from typing import ClassVar

from services.common.lifecycle import Service


class StorageService(Service):
    name: ClassVar[str] = "storage"

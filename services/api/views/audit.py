"""Endpoints of the audit area (being written)."""

from __future__ import annotations

from services.api.web.endpoint import Endpoints

routes = Endpoints("audit")

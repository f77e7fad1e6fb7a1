"""The list endpoints on PostgreSQL, the production metadata DB: their statements
are built once and bound per request, and must mean the same on both backends.
The tests are the SQLite ones, collected again here with the API on PostgreSQL."""

from __future__ import annotations

import pytest

from tests.api.test_audit import test_filters as test_audit_filters
from tests.api.test_audit import test_pages_newest_first_and_stable as test_audit_pages
from tests.api.test_backups import listing
from tests.api.test_backups import (
    test_every_way_of_listing_gives_the_same_pages as test_backup_pages,
)
from tests.api.test_projects import test_other_users_projects_are_invisible as test_project_scope
from tests.api.test_projects import test_pagination_is_stable_and_complete as test_project_pages

__all__ = [
    "listing",
    "test_audit_filters",
    "test_audit_pages",
    "test_backup_pages",
    "test_project_pages",
    "test_project_scope",
]


@pytest.fixture
def api_database_url(pg_url: str) -> str:
    return pg_url

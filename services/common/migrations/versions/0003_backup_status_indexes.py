"""Backups lists read their page from an index, in order.

(status, queued_at) replaces (status), and (database_id, status, queued_at, id)
serves one database's (or a member's few databases') runs of one status: without
them SQLite walked every run of that status and sorted them (40-50 ms a page over
100,000 runs, instead of under 1 ms). (database_id, queued_at) gains the id, the
list's tie-breaker, so a member's page is chosen from the index alone and only its
own rows are read from the table.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 12:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index(op.f("ix_backups_status"), table_name="backups")
    op.drop_index(op.f("ix_backups_database_id_queued_at"), table_name="backups")
    op.create_index(op.f("ix_backups_status_queued_at"), "backups", ["status", "queued_at"])
    op.create_index(
        op.f("ix_backups_database_id_queued_at_id"), "backups", ["database_id", "queued_at", "id"]
    )
    op.create_index(
        op.f("ix_backups_database_id_status_queued_at_id"),
        "backups",
        ["database_id", "status", "queued_at", "id"],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_backups_database_id_status_queued_at_id"), table_name="backups")
    op.drop_index(op.f("ix_backups_database_id_queued_at_id"), table_name="backups")
    op.drop_index(op.f("ix_backups_status_queued_at"), table_name="backups")
    op.create_index(
        op.f("ix_backups_database_id_queued_at"), "backups", ["database_id", "queued_at"]
    )
    op.create_index(op.f("ix_backups_status"), "backups", ["status"])

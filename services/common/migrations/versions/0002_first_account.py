"""Only one registration can be the first (and become an administrator).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 11:15:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("first_account", sa.Boolean(), nullable=True))
        batch.create_unique_constraint(op.f("uq_users_first_account"), ["first_account"])


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint(op.f("uq_users_first_account"), type_="unique")
        batch.drop_column("first_account")

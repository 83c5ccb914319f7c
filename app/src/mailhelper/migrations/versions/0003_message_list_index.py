"""Index for the newest-first message listing of an account.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_messages_account_id_internal_date",
        "messages",
        ["account_id", "internal_date", "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_messages_account_id_internal_date", table_name="messages")

"""phase_transitions: the history of the job-queue migration phases.

The phase playbooks record every transition (and forced gates with their reason) so the
gates can measure how long a phase has run, and /health and cutoff-report can show it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "phase_transitions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("from_phase", sa.Integer(), nullable=True),
        sa.Column("to_phase", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("forced", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_phase_transitions")),
    )
    op.create_index(op.f("ix_phase_transitions_at"), "phase_transitions", ["at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_phase_transitions_at"), table_name="phase_transitions")
    op.drop_table("phase_transitions")

"""Initial schema: users, API tokens, mail accounts, folders, messages, job_runs.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("wrapped_key", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("email", name="uq_users_email"),
        sa.UniqueConstraint("key_id", name="uq_users_key_id"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_used_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_api_tokens_user_id_users", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )
    op.create_index("ix_api_tokens_user_id", "api_tokens", ["user_id"])
    op.create_table(
        "mail_accounts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("host_enc", sa.LargeBinary(), nullable=False),
        sa.Column("port_enc", sa.LargeBinary(), nullable=False),
        sa.Column("tls_mode_enc", sa.LargeBinary(), nullable=False),
        sa.Column("username_enc", sa.LargeBinary(), nullable=False),
        sa.Column("password_enc", sa.LargeBinary(), nullable=False),
        sa.Column("sync_enabled", sa.Boolean(), nullable=False),
        sa.Column("last_sync_at", TS, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_kind", sa.String(20), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_mail_accounts"),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name="fk_mail_accounts_user_id_users",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_mail_accounts_user_id", "mail_accounts", ["user_id"])
    op.create_table(
        "folders",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(1000), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=True),
        sa.Column("uidnext", sa.BigInteger(), nullable=True),
        sa.Column("highestmodseq", sa.BigInteger(), nullable=True),
        sa.Column("last_seen_uid", sa.BigInteger(), nullable=False),
        sa.Column("message_count", sa.Integer(), nullable=False),
        sa.Column("last_sync_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_folders"),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["mail_accounts.id"],
            name="fk_folders_account_id_mail_accounts",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("account_id", "name", name="uq_folders_account_id"),
    )
    op.create_index("ix_folders_account_id", "folders", ["account_id"])
    op.create_table(
        "messages",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("folder_id", sa.Integer(), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("flags", sa.Text(), nullable=False),
        sa.Column("internal_date", TS, nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.String(998), nullable=True),
        sa.Column("sender_enc", sa.LargeBinary(), nullable=False),
        sa.Column("subject_enc", sa.LargeBinary(), nullable=False),
        sa.Column("raw_enc", sa.LargeBinary(), nullable=False),
        sa.Column("fetched_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["mail_accounts.id"],
            name="fk_messages_account_id_mail_accounts",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["folder_id"], ["folders.id"], name="fk_messages_folder_id_folders", ondelete="CASCADE"
        ),
        sa.UniqueConstraint(
            "account_id", "folder_id", "uidvalidity", "uid", name="uq_messages_uid"
        ),
    )
    op.create_index("ix_messages_account_id_id", "messages", ["account_id", "id"])
    if op.get_bind().dialect.name == "postgresql":
        # ciphertext does not compress: store it out of line without trying (saves CPU)
        for column in ("sender_enc", "subject_enc", "raw_enc"):
            op.execute(f"ALTER TABLE messages ALTER COLUMN {column} SET STORAGE EXTERNAL")
    op.create_table(
        "job_runs",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("backend", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("enqueued_at", TS, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_job_runs"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_job_runs_user_id_users", ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["mail_accounts.id"],
            name="fk_job_runs_account_id_mail_accounts",
            ondelete="SET NULL",
        ),
    )
    op.create_index("ix_job_runs_kind", "job_runs", ["kind"])
    op.create_index("ix_job_runs_status", "job_runs", ["status"])
    op.create_index("ix_job_runs_enqueued_at", "job_runs", ["enqueued_at"])


def downgrade() -> None:
    op.drop_table("job_runs")
    op.drop_table("messages")
    op.drop_table("folders")
    op.drop_table("mail_accounts")
    op.drop_table("api_tokens")
    op.drop_table("users")

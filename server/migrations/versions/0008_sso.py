"""single sign-on: users' provider identity and group source, expiring key enrolments,
the flows in progress, and the groups each request was decided with

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    # Batch mode: SQLite adds a CHECK or UNIQUE constraint only by rebuilding the table.
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("groups_source", sa.String(8), nullable=False, server_default="local")
        )
        batch.add_column(sa.Column("email", sa.String(320), nullable=True))
        batch.add_column(sa.Column("sso_subject", sa.String(64), nullable=True))
        batch.create_check_constraint(
            "ck_users_groups_source", _in("groups_source", ("local", "sso"))
        )
        batch.create_unique_constraint("uq_users_sso_subject", ["sso_subject"])
    with op.batch_alter_table("ssh_keys") as batch:
        batch.add_column(sa.Column("source", sa.String(8), nullable=False, server_default="admin"))
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("groups", sa.Text(), nullable=True))
        batch.create_check_constraint("ck_ssh_keys_source", _in("source", ("admin", "sso")))
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("groups_used", sa.Text(), nullable=True))
        batch.add_column(sa.Column("groups_source", sa.String(8), nullable=True))
        batch.create_check_constraint(
            "ck_requests_groups_source", _in("groups_source", ("local", "sso"))
        )
    op.create_table(
        "sso_flows",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("nonce", sa.String(64), nullable=True),
        sa.Column("code_verifier", sa.String(128), nullable=True),
        sa.Column("next_url", sa.Text(), nullable=True),
        sa.Column("loopback_port", sa.Integer(), nullable=True),
        sa.Column("public_key", sa.Text(), nullable=True),
        sa.Column("key_fingerprint", sa.String(64), nullable=True),
        sa.Column("device_code", sa.Text(), nullable=True),
        sa.Column("poll_interval", sa.Integer(), nullable=True),
        sa.Column("polled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=True
        ),
        sa.Column("finish_code_hash", sa.String(64), nullable=True),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(_in("kind", ("web", "cli", "device")), name="ck_sso_flows_kind"),
    )
    op.create_index("ix_sso_flows_expires_at", "sso_flows", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_sso_flows_expires_at", table_name="sso_flows")
    op.drop_table("sso_flows")
    with op.batch_alter_table("requests") as batch:
        batch.drop_constraint("ck_requests_groups_source", type_="check")
        batch.drop_column("groups_source")
        batch.drop_column("groups_used")
    with op.batch_alter_table("ssh_keys") as batch:
        batch.drop_constraint("ck_ssh_keys_source", type_="check")
        batch.drop_column("groups")
        batch.drop_column("expires_at")
        batch.drop_column("source")
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint("uq_users_sso_subject", type_="unique")
        batch.drop_constraint("ck_users_groups_source", type_="check")
        batch.drop_column("sso_subject")
        batch.drop_column("email")
        batch.drop_column("groups_source")

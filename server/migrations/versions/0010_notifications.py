"""notifications and extensions: the transactional outbox, Slack messages posted per
request, Slack interactions seen (replays), the request an extension extends, when a
certificate's expiry warning was recorded, and how each approval was given

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), primary_key=True),
        # The idempotency key receivers de-duplicate on: "<audit event id>.<sink>".
        sa.Column("key", sa.String(160), nullable=False),
        sa.Column("sink", sa.String(96), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(32), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("key", name="uq_outbox_key"),
        sa.CheckConstraint(_in("state", ("pending", "delivered", "dead")), name="ck_outbox_state"),
    )
    op.create_index("ix_outbox_due", "outbox", ["state", "next_attempt_at"])
    op.create_index("ix_outbox_request_id", "outbox", ["request_id"])
    op.create_table(
        "slack_messages",
        sa.Column("request_id", sa.String(32), sa.ForeignKey("requests.id"), primary_key=True),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("ts", sa.String(32), nullable=False),
        sa.Column("posted_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "chat_replays",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_chat_replays_expires_at", "chat_replays", ["expires_at"])
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("extends_id", sa.String(32), nullable=True))
        batch.create_foreign_key("fk_requests_extends_id", "requests", ["extends_id"], ["id"])
        batch.create_index("ix_requests_extends_id", ["extends_id"])
    with op.batch_alter_table("certificates") as batch:
        batch.add_column(sa.Column("warned_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("approvals") as batch:
        batch.add_column(sa.Column("via", sa.String(16), nullable=True))
    # How a web session signed in: a rule's approver_auth ("totp", "fresh_sso") is judged on it.
    with op.batch_alter_table("web_sessions") as batch:
        batch.add_column(sa.Column("via", sa.String(16), nullable=True))
        batch.add_column(
            sa.Column("totp_used", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("web_sessions") as batch:
        batch.drop_column("totp_used")
        batch.drop_column("via")
    with op.batch_alter_table("approvals") as batch:
        batch.drop_column("via")
    with op.batch_alter_table("certificates") as batch:
        batch.drop_column("warned_at")
    with op.batch_alter_table("requests") as batch:
        batch.drop_index("ix_requests_extends_id")
        batch.drop_constraint("fk_requests_extends_id", type_="foreignkey")
        batch.drop_column("extends_id")
    op.drop_index("ix_chat_replays_expires_at", table_name="chat_replays")
    op.drop_table("chat_replays")
    op.drop_table("slack_messages")
    op.drop_index("ix_outbox_request_id", table_name="outbox")
    op.drop_index("ix_outbox_due", table_name="outbox")
    op.drop_table("outbox")

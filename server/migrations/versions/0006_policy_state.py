"""policy state: the policy version last recorded, so that one change records one event

Every worker of every replica notices a changed policy file; the one that moves
this single row from the recorded version to the new one records
``policy.reloaded``, the others find it moved (``server.models.PolicyState``).
The row is created here, with no version: the first start records the current
version without an event, as a first load was never recorded.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "policy_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.String(length=64), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("audit_event_id", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    # The one row every worker locks: it exists before any of them starts.
    op.bulk_insert(table, [{"id": 1, "version": None, "changed_at": None, "audit_event_id": None}])


def downgrade() -> None:
    op.drop_table("policy_state")

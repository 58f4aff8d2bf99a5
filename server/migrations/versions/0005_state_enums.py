"""request states and approval decisions are enums: the database refuses other values

The columns keep their type (text) and every value they hold: the states and
decisions were always written as these strings. What changes is that a CHECK
constraint now holds them to the enums ``server.models.RequestState`` and
``server.models.ApprovalDecision``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# As of this revision (a later change to the enums needs a migration of its own).
_STATES = ("pending", "approved", "denied", "expired", "cancelled", "issued", "revoked", "ended")
_DECISIONS = ("approve", "deny")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    # Batch mode: SQLite adds a CHECK constraint only by rebuilding the table.
    with op.batch_alter_table("requests") as batch:
        batch.create_check_constraint("ck_requests_state", _in("state", _STATES))
    with op.batch_alter_table("approvals") as batch:
        batch.create_check_constraint("ck_approvals_decision", _in("decision", _DECISIONS))


def downgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.drop_constraint("ck_approvals_decision", type_="check")
    with op.batch_alter_table("requests") as batch:
        batch.drop_constraint("ck_requests_state", type_="check")

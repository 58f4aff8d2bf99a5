"""an index on approvals by approver, for an approver's "Decided by me" page

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_approvals_approver", "approvals", ["approver_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_approvals_approver", table_name="approvals")

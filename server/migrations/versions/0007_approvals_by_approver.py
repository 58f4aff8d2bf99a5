"""an index on approvals by approver, for an approver's "Decided by me" page

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_approvals_approver", "approvals", ["approver_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_approvals_approver", table_name="approvals")

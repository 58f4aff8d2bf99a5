"""single sign-on: the CLI's confirmation page (``/sso/cli/<token>``) on each cli flow

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Batch mode: SQLite adds a UNIQUE constraint only by rebuilding the table.
    with op.batch_alter_table("sso_flows") as batch:
        batch.add_column(sa.Column("open_token_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("open_state", sa.Text(), nullable=True))
        batch.add_column(sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("started_from", sa.String(64), nullable=True))
        batch.create_unique_constraint("uq_sso_flows_open_token_hash", ["open_token_hash"])


def downgrade() -> None:
    with op.batch_alter_table("sso_flows") as batch:
        batch.drop_constraint("uq_sso_flows_open_token_hash", type_="unique")
        batch.drop_column("started_from")
        batch.drop_column("opened_at")
        batch.drop_column("open_state")
        batch.drop_column("open_token_hash")

"""provisional results index: finality bookkeeping touches only results still waiting

Revision ID: 0010
Revises: 0009
"""

from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

PROVISIONAL = sa.text("status = 'accepted' AND final = false")


def upgrade() -> None:
    with op.batch_alter_table('results', schema=None) as batch_op:
        batch_op.create_index('ix_results_provisional', ['worker_id', 'checks_at'], unique=False,
                              sqlite_where=PROVISIONAL, postgresql_where=PROVISIONAL)


def downgrade() -> None:
    with op.batch_alter_table('results', schema=None) as batch_op:
        batch_op.drop_index('ix_results_provisional', sqlite_where=PROVISIONAL, postgresql_where=PROVISIONAL)

"""escrow: job funders and minimum stakes, epoch spends

Revision ID: 0008
Revises: 0007
"""

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('funder', sa.String(length=42), nullable=True))
        batch_op.add_column(sa.Column('min_stake', sa.String(length=80), server_default=sa.text("'0'"),
                                      nullable=False))
    with op.batch_alter_table('epochs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('spends_dump', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('epochs', schema=None) as batch_op:
        batch_op.drop_column('spends_dump')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('min_stake')
        batch_op.drop_column('funder')

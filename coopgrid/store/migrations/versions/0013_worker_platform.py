"""worker platform: what each worker reported it computes on, and its platform class

Revision ID: 0013
Revises: 0012
"""

from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('platform', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('platform_class', sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.drop_column('platform_class')
        batch_op.drop_column('platform')

"""bulk: a job's further dataset shards, and the archive of its purged per-replica rows

Revision ID: 0012
Revises: 0011
"""

from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('shards', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('archive_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('archived_at', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('archived_at')
        batch_op.drop_column('archive_hash')
        batch_op.drop_column('shards')

"""escrow: job funders and minimum stakes, epoch spends, signed batch values, slashes

Revision ID: 0009
Revises: 0008
"""

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('funder', sa.String(length=42), nullable=True))
        batch_op.add_column(sa.Column('min_stake', sa.String(length=80), server_default=sa.text("'0'"),
                                      nullable=False))
    with op.batch_alter_table('epochs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('spends_dump', sa.String(length=64), nullable=True))
    with op.batch_alter_table('result_batches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('signed', sa.Text(), nullable=True))
    op.create_table(
        'slashes',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('worker_id', sa.Integer(), nullable=False),
        sa.Column('job_id', sa.String(length=64), nullable=False),
        sa.Column('evidence', sa.String(length=64), nullable=False),
        sa.Column('amount', sa.String(length=80), nullable=False),
        sa.Column('tx_hash', sa.String(length=66), nullable=True),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(['worker_id'], ['workers.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('worker_id'),
    )


def downgrade() -> None:
    op.drop_table('slashes')
    with op.batch_alter_table('result_batches', schema=None) as batch_op:
        batch_op.drop_column('signed')
    with op.batch_alter_table('epochs', schema=None) as batch_op:
        batch_op.drop_column('spends_dump')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('min_stake')
        batch_op.drop_column('funder')

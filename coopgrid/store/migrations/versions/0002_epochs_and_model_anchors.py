"""epochs and model anchors

Revision ID: 0002
Revises: 0001
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('epochs',
    sa.Column('number', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('result_count', sa.Integer(), nullable=False),
    sa.Column('results_root', sa.String(length=66), nullable=True),
    sa.Column('rewards_root', sa.String(length=66), nullable=True),
    sa.Column('results_dump', sa.String(length=64), nullable=True),
    sa.Column('rewards_dump', sa.String(length=64), nullable=True),
    sa.Column('tx_hash', sa.String(length=66), nullable=True),
    sa.Column('raw_tx', sa.LargeBinary(), nullable=True),
    sa.Column('block_number', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('committed_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('number')
    )
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.add_column(sa.Column('anchor_tx', sa.String(length=66), nullable=True))
        batch_op.add_column(sa.Column('anchor_block', sa.Integer(), nullable=True))

    with op.batch_alter_table('results', schema=None) as batch_op:
        batch_op.add_column(sa.Column('epoch', sa.Integer(), nullable=True))
        batch_op.create_index('ix_results_epoch', ['epoch'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('results', schema=None) as batch_op:
        batch_op.drop_index('ix_results_epoch')
        batch_op.drop_column('epoch')

    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.drop_column('anchor_block')
        batch_op.drop_column('anchor_tx')

    op.drop_table('epochs')

"""collusion: trusted workers, rooted tasks, partner quarantines, disputes of sealed results

Revision ID: 0014
Revises: 0013
"""

from alembic import op
import sqlalchemy as sa


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('trusted', sa.Boolean(), server_default=sa.text('false'), nullable=False))
        batch_op.add_column(sa.Column('partner_quarantines', sa.Integer(), server_default=sa.text('0'),
                                      nullable=False))
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rooted', sa.Boolean(), server_default=sa.text('false'), nullable=False))
        batch_op.create_index('ix_tasks_rooted', ['id'], unique=False,
                              sqlite_where=sa.text("state = 'done' AND rooted"),
                              postgresql_where=sa.text("state = 'done' AND rooted"))
    op.create_table(
        'disputes',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('task_id', sa.Integer(), nullable=False),
        sa.Column('job_id', sa.String(length=64), nullable=False),
        sa.Column('result_id', sa.Integer(), nullable=False),
        sa.Column('worker_id', sa.Integer(), nullable=False),
        sa.Column('epoch', sa.Integer(), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(['task_id'], ['tasks.id']),
        sa.ForeignKeyConstraint(['result_id'], ['results.id']),
        sa.ForeignKeyConstraint(['worker_id'], ['workers.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('result_id', 'worker_id', name='uq_disputes_result_worker'),
    )
    with op.batch_alter_table('disputes', schema=None) as batch_op:
        batch_op.create_index('ix_disputes_job', ['job_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('disputes', schema=None) as batch_op:
        batch_op.drop_index('ix_disputes_job')
    op.drop_table('disputes')
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_index('ix_tasks_rooted', sqlite_where=sa.text("state = 'done' AND rooted"),
                            postgresql_where=sa.text("state = 'done' AND rooted"))
        batch_op.drop_column('rooted')
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.drop_column('partner_quarantines')
        batch_op.drop_column('trusted')

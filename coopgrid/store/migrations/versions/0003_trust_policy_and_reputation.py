"""trust policy and reputation

Revision ID: 0003
Revises: 0002
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('reputation',
    sa.Column('worker_id', sa.Integer(), nullable=False),
    sa.Column('task_type', sa.String(length=50), nullable=False),
    sa.Column('run', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('valid', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('invalid', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('errors', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('timeouts', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('gold_passed', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('gold_failed', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('checks_passed', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('quota', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['worker_id'], ['workers.id'], ),
    sa.PrimaryKeyConstraint('worker_id', 'task_type')
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tasks_inconclusive', sa.Integer(), server_default=sa.text('0'), nullable=False))
        batch_op.add_column(sa.Column('policy', sa.Text(), server_default=sa.text("'{}'"), nullable=False))

    with op.batch_alter_table('replicas', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=10), server_default=sa.text("'normal'"), nullable=False))

    with op.batch_alter_table('results', schema=None) as batch_op:
        batch_op.add_column(sa.Column('final', sa.Boolean(), server_default=sa.text('false'), nullable=False))
        batch_op.add_column(sa.Column('checks_at', sa.Integer(), nullable=True))
        batch_op.create_index('ix_results_task', ['task_id'], unique=False)
        batch_op.create_index('ix_results_worker_final', ['worker_id', 'final'], unique=False)

    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('issued', sa.Integer(), server_default=sa.text('1'), nullable=False))
        # 'provisional' and 'inconclusive' do not fit in 10 characters
        batch_op.alter_column('state', existing_type=sa.String(length=10), type_=sa.String(length=20),
                              existing_nullable=False)

    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('quarantined_at', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('quarantine_reason', sa.Text(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.drop_column('quarantine_reason')
        batch_op.drop_column('quarantined_at')

    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_column('issued')

    with op.batch_alter_table('results', schema=None) as batch_op:
        batch_op.drop_index('ix_results_worker_final')
        batch_op.drop_index('ix_results_task')
        batch_op.drop_column('checks_at')
        batch_op.drop_column('final')

    with op.batch_alter_table('replicas', schema=None) as batch_op:
        batch_op.drop_column('kind')

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('policy')
        batch_op.drop_column('tasks_inconclusive')

    op.drop_table('reputation')

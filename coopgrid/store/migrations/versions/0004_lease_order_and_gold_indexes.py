"""lease order and gold indexes

Revision ID: 0004
Revises: 0003
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('replicas', schema=None) as batch_op:
        batch_op.create_index('ix_replicas_ready_task', ['task_id'], unique=False,
                              sqlite_where=sa.text('state = 0'), postgresql_where=sa.text('state = 0'))
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.create_index('ix_tasks_done', ['id'], unique=False,
                              sqlite_where=sa.text("state = 'done'"), postgresql_where=sa.text("state = 'done'"))


def downgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_index('ix_tasks_done', sqlite_where=sa.text("state = 'done'"),
                            postgresql_where=sa.text("state = 'done'"))
    with op.batch_alter_table('replicas', schema=None) as batch_op:
        batch_op.drop_index('ix_replicas_ready_task', sqlite_where=sa.text('state = 0'),
                            postgresql_where=sa.text('state = 0'))

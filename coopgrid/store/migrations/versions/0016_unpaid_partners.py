"""finality in the result alone: a provisional task is not rewritten when its result becomes final

ix_results_unpaid finds the results that agreed with a provisional task (paid once it is final)
without visiting every task made final. Gold is drawn from final answers, ix_results_final_task,
instead of done tasks (ix_tasks_done, dropped): a provisional task made final stays provisional.

Revision ID: 0016
Revises: 0015
"""

from alembic import op
import sqlalchemy as sa


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # (tasks made final by their worker's checks before this were rewritten as done; they stay done)
    op.drop_index('ix_tasks_done', table_name='tasks')
    op.create_index(
        'ix_results_final_task', 'results', ['task_id'], unique=False,
        sqlite_where=sa.text("status = 'accepted' AND final"),
        postgresql_where=sa.text("status = 'accepted' AND final"),
    )
    op.create_index(
        'ix_results_unpaid', 'results', ['task_id'], unique=False,
        sqlite_where=sa.text("status = 'valid' AND final = false"),
        postgresql_where=sa.text("status = 'valid' AND final = false"),
    )


def downgrade() -> None:
    op.drop_index('ix_results_unpaid', table_name='results')
    op.drop_index('ix_results_final_task', table_name='results')
    op.create_index(
        'ix_tasks_done', 'tasks', ['id'], unique=False,
        sqlite_where=sa.text("state = 'done'"), postgresql_where=sa.text("state = 'done'"),
    )

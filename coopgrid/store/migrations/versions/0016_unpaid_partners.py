"""finality in the result alone: a provisional task is no longer rewritten when its result becomes final

ix_results_unpaid finds the results that agreed with a provisional task (paid once it is final)
without visiting every task made final; ix_tasks_provisional is where gold looks for tasks whose
result became final since (they stay provisional).

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
    # tasks made final by their worker's checks were rewritten as done; they stay done
    op.create_index(
        'ix_tasks_provisional', 'tasks', ['id'], unique=False,
        sqlite_where=sa.text("state = 'provisional'"),
        postgresql_where=sa.text("state = 'provisional'"),
    )
    op.create_index(
        'ix_results_unpaid', 'results', ['task_id'], unique=False,
        sqlite_where=sa.text("status = 'valid' AND final = false"),
        postgresql_where=sa.text("status = 'valid' AND final = false"),
    )


def downgrade() -> None:
    op.drop_index('ix_results_unpaid', table_name='results')
    op.drop_index('ix_tasks_provisional', table_name='tasks')

"""a grid's history out of its hot queries: running jobs, workers by recency and kin, pending results

Each lease counted the workers seen lately, looked up the worker's kin (same owner, network or
suspicion) and the running jobs; a lease that found nothing was deleted past a check of every
result batch (the foreign key had no index); the scheduler listed every job once a second, and
the catch-up round looked for pending results: scans of tables that only grow (every job, worker,
batch and result a grid ever had), so a grid slowed the longer it ran.

Revision ID: 0017
Revises: 0016
"""

from alembic import op
import sqlalchemy as sa


revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_jobs_state', 'jobs', ['state'], unique=False)
    op.create_index('ix_workers_last_seen', 'workers', ['last_seen'], unique=False)
    op.create_index('ix_workers_owner', 'workers', ['owner'], unique=False)
    op.create_index('ix_workers_network', 'workers', ['network'], unique=False)
    op.create_index('ix_workers_partner_quarantines', 'workers', ['partner_quarantines'], unique=False)
    op.create_index('ix_result_batches_lease', 'result_batches', ['lease_id'], unique=False)
    op.create_index(
        'ix_results_pending', 'results', ['task_id'], unique=False,
        sqlite_where=sa.text("status = 'pending'"),
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index('ix_results_pending', table_name='results')
    op.drop_index('ix_result_batches_lease', table_name='result_batches')
    op.drop_index('ix_workers_partner_quarantines', table_name='workers')
    op.drop_index('ix_workers_network', table_name='workers')
    op.drop_index('ix_workers_owner', table_name='workers')
    op.drop_index('ix_workers_last_seen', table_name='workers')
    op.drop_index('ix_jobs_state', table_name='jobs')

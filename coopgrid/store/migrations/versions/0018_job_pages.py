"""jobs listed a page at a time, newest first; paid jobs' escrows marked closed

GET /v1/jobs answered every job a submitter (or, for an operator, the grid) ever had, sorted: a
long-lived grid's answer only grew. It now reads a page through these indexes. The sealer's loop
read every job to find paid ones whose escrow it may close, remembering closed ones only in its
process; a closed escrow is now marked, and the open ones are found through a partial index.

Revision ID: 0018
Revises: 0017
"""

from alembic import op
import sqlalchemy as sa


revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_jobs_owner_created', 'jobs', ['owner_token_id', 'created_at', 'id'], unique=False)
    op.create_index('ix_jobs_created', 'jobs', ['created_at', 'id'], unique=False)
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('escrow_closed', sa.Boolean(), server_default=sa.text('false'), nullable=False))
    op.create_index(
        'ix_jobs_escrow_open', 'jobs', ['id'], unique=False,
        sqlite_where=sa.text('funder IS NOT NULL AND NOT escrow_closed'),
        postgresql_where=sa.text('funder IS NOT NULL AND NOT escrow_closed'),
    )


def downgrade() -> None:
    op.drop_index('ix_jobs_escrow_open', table_name='jobs')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('escrow_closed')
    op.drop_index('ix_jobs_created', table_name='jobs')
    op.drop_index('ix_jobs_owner_created', table_name='jobs')

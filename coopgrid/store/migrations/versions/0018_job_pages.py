"""jobs listed a page at a time, newest first: by owner, or all of them for an operator

GET /v1/jobs answered every job a submitter (or, for an operator, the grid) ever had, sorted: a
long-lived grid's answer only grew. It now reads a page through these indexes.

Revision ID: 0018
Revises: 0017
"""

from alembic import op


revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_jobs_owner_created', 'jobs', ['owner_token_id', 'created_at', 'id'], unique=False)
    op.create_index('ix_jobs_created', 'jobs', ['created_at', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_jobs_created', table_name='jobs')
    op.drop_index('ix_jobs_owner_created', table_name='jobs')

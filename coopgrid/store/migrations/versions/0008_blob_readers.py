"""blob readers

Revision ID: 0008
Revises: 0007

Blobs get readers (coordinator/access.py): a table of grants, and indexes for the
job, task and lease relations a read is decided from. Finished jobs' owners are
granted their outputs and artefacts here; earlier uploads have no known uploader,
so a submitter uploads such bytes again (PUT /v1/blobs is idempotent) to read them
or name them as a dataset, unless a job of its own already uses them.
"""

import json
import re

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    blob_readers = op.create_table(
        'blob_readers',
        sa.Column('blob', sa.String(length=64), nullable=False),
        sa.Column('token_id', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['token_id'], ['tokens.id']),
        sa.PrimaryKeyConstraint('blob', 'token_id'),
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_dataset', ['dataset_hash'], unique=False)
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.create_index('ix_tasks_input_blob', ['input_hash'], unique=False,
                              sqlite_where=sa.text('input_data IS NULL'),
                              postgresql_where=sa.text('input_data IS NULL'))
    with op.batch_alter_table('leases', schema=None) as batch_op:
        batch_op.create_index('ix_leases_worker_open', ['worker_id'], unique=False,
                              sqlite_where=sa.text("state = 'open'"), postgresql_where=sa.text("state = 'open'"))

    grants = set()
    done = op.get_bind().execute(
        sa.text('SELECT owner_token_id, output_hash, summary FROM jobs WHERE output_hash IS NOT NULL')
    )
    for owner, output, summary in done:
        grants.add((output, owner))
        artefacts = (json.loads(summary) if summary else {}).get('blobs') or {}
        grants.update((h, owner) for h in artefacts.values() if isinstance(h, str) and re.fullmatch('[0-9a-f]{64}', h))
    if grants:
        op.bulk_insert(blob_readers, [{'blob': b, 'token_id': t} for b, t in sorted(grants)])


def downgrade() -> None:
    with op.batch_alter_table('leases', schema=None) as batch_op:
        batch_op.drop_index('ix_leases_worker_open', sqlite_where=sa.text("state = 'open'"),
                            postgresql_where=sa.text("state = 'open'"))
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_index('ix_tasks_input_blob', sqlite_where=sa.text('input_data IS NULL'),
                            postgresql_where=sa.text('input_data IS NULL'))
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_dataset')
    op.drop_table('blob_readers')

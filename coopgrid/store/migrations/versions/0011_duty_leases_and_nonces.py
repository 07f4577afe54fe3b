"""scale-out: duty leases (one leader per periodic duty) and request nonces shared by every process

Revision ID: 0011
Revises: 0010
"""

from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'duty_leases',
        sa.Column('name', sa.String(length=40), nullable=False),
        sa.Column('holder', sa.String(length=120), nullable=False),
        sa.Column('expires_at', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )
    op.create_table(
        'request_nonces',
        sa.Column('address', sa.String(length=42), nullable=False),
        sa.Column('nonce', sa.String(length=80), nullable=False),
        sa.Column('expires_at', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('address', 'nonce'),
    )
    op.create_index('ix_request_nonces_expires_at', 'request_nonces', ['expires_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_request_nonces_expires_at', table_name='request_nonces')
    op.drop_table('request_nonces')
    op.drop_table('duty_leases')

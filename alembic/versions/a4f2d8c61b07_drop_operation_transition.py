"""drop operation_transition: the events tables are the one transition log

The supervisor wrote every status change of a launched operation into
``operation_transition``, but nothing in the app read it: the history, the events
and webhooks come from ``dgx_event`` / ``dgx_history``, which the events probe
fills from the snapshots for launched and discovered operations alike. The table
is dropped; its rows are lost (they were never shown). A downgrade makes the
table again, empty.

Revision ID: a4f2d8c61b07
Revises: e3a91f4c2b6d
Create Date: 2026-12-10 10:00:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


# revision identifiers, used by Alembic.
revision: str = 'a4f2d8c61b07'
down_revision: Union[str, Sequence[str], None] = 'e3a91f4c2b6d'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('operation_transition', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_operation_transition_operation_id'))
        batch_op.drop_index(batch_op.f('ix_operation_transition_at'))
    op.drop_table('operation_transition')


def downgrade() -> None:
    """Downgrade schema."""
    op.create_table('operation_transition',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('operation_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.Column('from_status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
    sa.Column('to_status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('exit_code', sa.Integer(), nullable=True),
    sa.Column('detail', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('run', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('operation_transition', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_operation_transition_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_operation_transition_operation_id'), ['operation_id'], unique=False)

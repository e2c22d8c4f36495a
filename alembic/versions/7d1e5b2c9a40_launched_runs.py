"""launched runs: run number, outcome, stop signal and restart policy of launched operations

``launched_operation`` gains the current run (1, 2, ...), how it ended
(``outcome``, ``exit_reason``, ``outcome_source``), the signal the user chose
to stop it, and its restart policy with its state. ``operation_transition``
gains the run it belongs to. Existing rows become run 1 with no restarts.

Revision ID: 7d1e5b2c9a40
Revises: 40c032098de2
Create Date: 2026-12-01 12:00:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


# revision identifiers, used by Alembic.
revision: str = '7d1e5b2c9a40'
down_revision: Union[str, Sequence[str], None] = '40c032098de2'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('launched_operation', schema=None) as batch_op:
        batch_op.add_column(sa.Column('run', sa.Integer(), nullable=False, server_default='1'))
        batch_op.add_column(sa.Column('outcome', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True))
        batch_op.add_column(sa.Column('exit_reason', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column('outcome_source', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True))
        batch_op.add_column(sa.Column('stop_signal', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=True))
        batch_op.add_column(sa.Column('restart_json', sqlmodel.sql.sqltypes.AutoString(), nullable=False,
                                      server_default='{}'))
        batch_op.add_column(sa.Column('restarts', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('restart_streak', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('restart_due_at', sa.Float(), nullable=True))
    with op.batch_alter_table('operation_transition', schema=None) as batch_op:
        batch_op.add_column(sa.Column('run', sa.Integer(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('operation_transition', schema=None) as batch_op:
        batch_op.drop_column('run')
    with op.batch_alter_table('launched_operation', schema=None) as batch_op:
        for column in ('restart_due_at', 'restart_streak', 'restarts', 'restart_json', 'stop_signal',
                       'outcome_source', 'exit_reason', 'outcome', 'run'):
            batch_op.drop_column(column)

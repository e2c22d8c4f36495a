"""events run: events and history rows per run of an operation

A launched operation keeps its id when it is started again; each start is a
new run (1, 2, ...). ``dgx_event`` gains ``run``; ``dgx_history`` is keyed by
(operation id, run) so each run keeps its own row. Existing rows become run 1.

Revision ID: 40c032098de2
Revises: c988c310762e
Create Date: 2026-12-01 10:00:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


# revision identifiers, used by Alembic.
revision: str = '40c032098de2'
down_revision: Union[str, Sequence[str], None] = 'c988c310762e'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

HISTORY_COLUMNS = (
    "operation_id, name, op_type, status, source, description, command, pid, port, "
    "started_at, ended_at, exit_code, peak_memory_bytes, log_tail"
)


def _history_table(name: str, with_run: bool) -> None:
    """Create a history table in the old or the new shape under ``name``."""
    columns = [
        sa.Column('operation_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    ]
    if with_run:
        columns.append(sa.Column('run', sa.Integer(), nullable=False, server_default='1', autoincrement=False))
    columns += [
        sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
        sa.Column('op_type', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column('description', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column('command', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column('pid', sa.Integer(), nullable=True),
        sa.Column('port', sa.Integer(), nullable=True),
        sa.Column('started_at', sa.Float(), nullable=True),
        sa.Column('ended_at', sa.Float(), nullable=False),
        sa.Column('exit_code', sa.Integer(), nullable=True),
        sa.Column('peak_memory_bytes', sa.Integer(), nullable=True),
        sa.Column('log_tail', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    ]
    key = ['operation_id', 'run'] if with_run else ['operation_id']
    op.create_table(name, *columns, sa.PrimaryKeyConstraint(*key))


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column('dgx_event', sa.Column('run', sa.Integer(), nullable=False, server_default='1'))
    # A new primary key: build the new table, copy, swap (works the same on SQLite and PostgreSQL).
    _history_table('dgx_history_new', with_run=True)
    op.execute(
        f"INSERT INTO dgx_history_new ({HISTORY_COLUMNS}, run) SELECT {HISTORY_COLUMNS}, 1 FROM dgx_history"
    )
    op.drop_index(op.f('ix_dgx_history_ended_at'), table_name='dgx_history')
    op.drop_table('dgx_history')
    op.rename_table('dgx_history_new', 'dgx_history')
    op.create_index(op.f('ix_dgx_history_ended_at'), 'dgx_history', ['ended_at'], unique=False)


def downgrade() -> None:
    """Downgrade schema (keeps the latest run of each operation)."""
    _history_table('dgx_history_old', with_run=False)
    op.execute(
        f"INSERT INTO dgx_history_old ({HISTORY_COLUMNS}) SELECT {HISTORY_COLUMNS} FROM dgx_history h "
        "WHERE h.run = (SELECT MAX(r.run) FROM dgx_history r WHERE r.operation_id = h.operation_id)"
    )
    op.drop_index(op.f('ix_dgx_history_ended_at'), table_name='dgx_history')
    op.drop_table('dgx_history')
    op.rename_table('dgx_history_old', 'dgx_history')
    op.create_index(op.f('ix_dgx_history_ended_at'), 'dgx_history', ['ended_at'], unique=False)
    with op.batch_alter_table('dgx_event') as batch:
        batch.drop_column('run')

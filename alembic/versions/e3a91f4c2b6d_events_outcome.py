"""events outcome: how each run ended, on its terminal event and its history row

``dgx_event`` and ``dgx_history`` gain ``outcome`` (``completed`` / ``failed`` /
``stopped``), ``exit_reason`` and ``outcome_source`` (``runner``, ``kernel``,
``log``, ``progress``, ``unknown``). Existing terminal events get their kind as
outcome; existing history rows the outcome their status and exit code gave
(failed; exit 0: completed; otherwise stopped). Where those came from was not
recorded, so their ``outcome_source`` stays empty.

Revision ID: e3a91f4c2b6d
Revises: 7d1e5b2c9a40
Create Date: 2026-12-02 10:00:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


# revision identifiers, used by Alembic.
revision: str = 'e3a91f4c2b6d'
down_revision: Union[str, Sequence[str], None] = '7d1e5b2c9a40'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

TABLES = ('dgx_event', 'dgx_history')


def upgrade() -> None:
    """Upgrade schema."""
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('outcome', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True))
            batch_op.add_column(sa.Column('exit_reason', sqlmodel.sql.sqltypes.AutoString(length=500),
                                          nullable=True))
            batch_op.add_column(sa.Column('outcome_source', sqlmodel.sql.sqltypes.AutoString(length=16),
                                          nullable=True))
    op.execute("UPDATE dgx_event SET outcome = kind WHERE kind IN ('completed', 'failed', 'stopped')")
    op.execute(
        "UPDATE dgx_history SET outcome = CASE WHEN status = 'failed' THEN 'failed' "
        "WHEN exit_code = 0 THEN 'completed' ELSE 'stopped' END"
    )


def downgrade() -> None:
    """Downgrade schema."""
    for table in reversed(TABLES):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in ('outcome_source', 'exit_reason', 'outcome'):
                batch_op.drop_column(column)

"""audit target_name: each audit row keeps its target's name as it was

An operation's id says little once the operation is gone (Remove forgets it).
The control service writes the name next to the id; older rows have none.

Revision ID: b8e2c4d6f1a3
Revises: a4f2d8c61b07
Create Date: 2026-12-11 12:00:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


# revision identifiers, used by Alembic.
revision: str = 'b8e2c4d6f1a3'
down_revision: Union[str, Sequence[str], None] = 'a4f2d8c61b07'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.add_column(sa.Column('target_name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_column('target_name')

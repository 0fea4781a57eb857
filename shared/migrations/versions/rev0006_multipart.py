"""photos.upload_id and photos.part_size: multipart uploads.

Revision ID: 0006_multipart
Revises: 0005_mail
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_multipart"
down_revision = "0005_mail"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("photos", sa.Column("upload_id", sa.Text(), nullable=True))
    op.add_column("photos", sa.Column("part_size", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    # SQLite rebuilds the table to drop a column; see revision 0002 for why the timestamp
    # columns are declared rather than reflected.
    timestamps = (
        sa.Column("upload_expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True)),
    )
    with op.batch_alter_table("photos", reflect_args=timestamps) as batch:
        batch.drop_column("part_size")
        batch.drop_column("upload_id")

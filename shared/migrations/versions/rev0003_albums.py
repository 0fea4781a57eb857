"""Albums, their members and share links; photos.album_id.

Revision ID: 0003_albums
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_albums"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "albums",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("owner_id", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("reveal_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revealed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("albums_due", "albums", ["revealed_at", "reveal_at"])
    op.create_index("albums_owner", "albums", ["owner_id"])
    op.create_table(
        "album_members",
        sa.Column("album_id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["album_id"], ["albums.id"]),
        sa.PrimaryKeyConstraint("album_id", "user_id"),
    )
    op.create_index("album_members_user", "album_members", ["user_id"])
    op.create_table(
        "share_links",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("token_hash", sa.Text(), nullable=False),
        sa.Column("album_id", sa.Text(), nullable=True),
        sa.Column("photo_id", sa.Text(), nullable=True),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("password_hash", sa.Text(), nullable=True),
        sa.Column("allow_download", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["album_id"], ["albums.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index("share_links_album", "share_links", ["album_id"])
    op.create_index("share_links_photo", "share_links", ["photo_id"])
    op.add_column("photos", sa.Column("album_id", sa.Text(), nullable=True))
    op.create_index("photos_album_created", "photos", ["album_id", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("photos_album_created", "photos")
    # SQLite rebuilds the table to drop a column; see revision 0002 for why the timestamp
    # columns are declared rather than reflected.
    timestamps = (
        sa.Column("upload_expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True)),
    )
    with op.batch_alter_table("photos", reflect_args=timestamps) as batch:
        batch.drop_column("album_id")
    op.drop_table("share_links")
    op.drop_table("album_members")
    op.drop_table("albums")

"""Table definitions used to build queries. The schema itself is created by migrations."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

photos = sa.Table(
    "photos",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("owner_id", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("object_key", sa.Text, nullable=False, unique=True),
    sa.Column("filename", sa.Text, nullable=False),
    sa.Column("trace_id", sa.Text, nullable=False),
    sa.Column("declared_type", sa.Text, nullable=False),
    sa.Column("declared_size", sa.BigInteger, nullable=False),
    sa.Column("content_type", sa.Text),
    sa.Column("size", sa.BigInteger),
    sa.Column("width", sa.Integer),
    sa.Column("height", sa.Integer),
    sa.Column("etag", sa.Text),
    sa.Column("reason", sa.Text),
    sa.Column("reason_detail", sa.Text),
    sa.Column("upload_expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # Migration 3: facts the thumbnail worker records.
    sa.Column("keep_location", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("sha256", sa.Text),
    sa.Column("placeholder", sa.Text),
    sa.Column("taken_at", sa.DateTime(timezone=True)),
    sa.Column("taken_at_local", sa.Text),
    sa.Column("camera_make", sa.Text),
    sa.Column("camera_model", sa.Text),
    sa.Column("lens_model", sa.Text),
    sa.Column("exposure_time", sa.Float),
    sa.Column("f_number", sa.Float),
    sa.Column("iso", sa.Integer),
    sa.Column("focal_length", sa.Float),
    sa.Column("gps_latitude", sa.Float),
    sa.Column("gps_longitude", sa.Float),
)

renditions = sa.Table(
    "renditions",
    metadata,
    sa.Column("photo_id", sa.Text, sa.ForeignKey("photos.id"), primary_key=True),
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("object_key", sa.Text, nullable=False),
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
    sa.Column("content_type", sa.Text, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
)

# Events waiting to be published: written in the same transaction as the state change
# they announce, deleted once the broker confirmed them (see shared/outbox.py).
outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("routing_key", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("claimed_until", sa.DateTime(timezone=True)),
)

# Server-to-server API keys (migration 2). Only the SHA-256 of a key is stored.
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("secret_hash", sa.Text, nullable=False, unique=True),
    sa.Column("scopes", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
)

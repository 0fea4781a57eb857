"""The schema: the one metadata that queries are built from and migrations are generated
from (`python -m shared.migrations revision`). `make lint` fails when they disagree."""

from __future__ import annotations

from datetime import UTC, datetime

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
    # Set by every update made through SQLAlchemy: on SQLite it is the version a listing
    # page's items are kept by (shared/listing.py).
    sa.Column(
        "updated_at", sa.DateTime(timezone=True), nullable=False, onupdate=lambda: datetime.now(UTC)
    ),
    sa.Column("keep_location", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("sha256", sa.Text),
    sa.Column("taken_at", sa.DateTime(timezone=True)),
    # shared.facts.PhotoFacts as JSON, once rendered; sha256 and taken_at are also columns
    # of their own because queries filter on them. SQL NULL (not JSON null) until then.
    sa.Column("facts", sa.JSON(none_as_null=True)),
    # shared.records.RenditionRecord's, as a JSON array by name, once ready: written with
    # the move to ready and read with the photo (a table of their own cost a listing page
    # 50 lookups, 0.5 ms of PostgreSQL's 0.6 ms). SQL NULL until then.
    sa.Column("renditions", sa.JSON(none_as_null=True)),
    # The album it was uploaded into, if any (shared/albums.py); the photo stays its
    # uploader's when the album goes.
    sa.Column("album_id", sa.Text),
    # A multipart upload's S3 id and part size (shared.records.NewPhoto); NULL for a
    # single-request upload.
    sa.Column("upload_id", sa.Text),
    sa.Column("part_size", sa.BigInteger),
    # Whether the photo counts against its owner's quota (shared.reservations.usage_query)
    # as of its last write, and so is in owner_usage: kept by triggers on PostgreSQL,
    # unused on SQLite.
    sa.Column("counted", sa.Boolean, nullable=False, server_default=sa.false()),
    # An owner's listing pages on (created_at, id); the sweep finds lapsed pending uploads.
    sa.Index("photos_owner_created", "owner_id", "created_at", "id"),
    sa.Index("photos_status_expiry", "status", "upload_expires_at"),
    # Upload dedupe looks up an owner's bytes; the listing filters on when taken.
    sa.Index("photos_owner_sha256", "owner_id", "sha256"),
    sa.Index("photos_owner_taken", "owner_id", "taken_at"),
    # An album's photos page on (created_at, id) like an owner's listing.
    sa.Index("photos_album_created", "album_id", "created_at", "id"),
    # Counted uploads whose URL may lapse: a grant batch finds its owners' lapsed ones.
    sa.Index(
        "photos_counted_lapsing",
        "owner_id",
        "upload_expires_at",
        postgresql_where=sa.text("counted AND status IN ('pending', 'deleted')"),
        sqlite_where=sa.text("counted AND status IN ('pending', 'deleted')"),
    ),
)

# Each owner's photos that count against quotas, their bytes, and the pending uploads
# among them: the sums over photos.counted, kept by triggers (PostgreSQL only).
owner_usage = sa.Table(
    "owner_usage",
    metadata,
    sa.Column("owner_id", sa.Text, primary_key=True),
    sa.Column("photos", sa.BigInteger, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("pending", sa.BigInteger, nullable=False),
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
    sa.Index("outbox_created", "created_at"),
)

# Server-to-server API keys. Only the SHA-256 of a key is stored.
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

# Albums: photos a group shares, sealed until `reveal_at`. `revealed_at` records that
# album.revealed was queued (set once, by compare-and-set, with the event).
albums = sa.Table(
    "albums",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("owner_id", sa.Text, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("reveal_at", sa.DateTime(timezone=True)),
    sa.Column("revealed_at", sa.DateTime(timezone=True)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("albums_owner", "owner_id"),
    # The reveal loop looks for albums due and not yet announced.
    sa.Index("albums_due", "revealed_at", "reveal_at"),
)

# Everyone in an album but its owner, with their role (contributor or viewer).
album_members = sa.Table(
    "album_members",
    metadata,
    sa.Column("album_id", sa.Text, sa.ForeignKey("albums.id"), primary_key=True),
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("album_members_user", "user_id"),
)

# Share links to an album or one photo. Only the SHA-256 of the token is stored, and
# the password's argon2 hash.
share_links = sa.Table(
    "share_links",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("token_hash", sa.Text, nullable=False, unique=True),
    sa.Column("album_id", sa.Text, sa.ForeignKey("albums.id")),
    sa.Column("photo_id", sa.Text),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True)),
    sa.Column("password_hash", sa.Text),
    sa.Column("allow_download", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
    sa.Index("share_links_album", "album_id"),
    sa.Index("share_links_photo", "photo_id"),
)

# Users' webhook endpoints (shared/webhooks.py). `secret` (and `previous_secret` for a
# day after a rotation) is sealed with DARKROOM_WEBHOOK_SECRETS_KEY when that is set:
# deliveries need it back, so it cannot be hashed.
webhooks = sa.Table(
    "webhooks",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Text, nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("events", sa.JSON, nullable=False),
    sa.Column("secret", sa.Text, nullable=False),
    sa.Column("previous_secret", sa.Text),
    sa.Column("previous_until", sa.DateTime(timezone=True)),
    # Set by the first failed delivery after a success; cleared by the next success.
    sa.Column("failing_since", sa.DateTime(timezone=True)),
    sa.Column("disabled_at", sa.DateTime(timezone=True)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("webhooks_user", "user_id", "created_at"),
)

# One event for one endpoint: its body is fixed when planned, so every attempt sends
# the same bytes under the same webhook-id. `webhook_id` is "operator" for
# DARKROOM_WEBHOOK_URL, which has no row above.
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("webhook_id", sa.Text, nullable=False),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("event_type", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    # An attempt in flight: a copy of its message redelivered meanwhile (a broker
    # connection lost mid-request) does not send it a second time.
    sa.Column("claimed_until", sa.DateTime(timezone=True)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("webhook_id", "event_id", name="webhook_deliveries_once"),
    sa.Index("webhook_deliveries_page", "webhook_id", "created_at", "id"),
)

# Each attempt of a delivery: what the endpoint answered (None: no answer) and when.
webhook_attempts = sa.Table(
    "webhook_attempts",
    metadata,
    sa.Column("delivery_id", sa.Text, sa.ForeignKey("webhook_deliveries.id"), primary_key=True),
    sa.Column("number", sa.Integer, primary_key=True),
    sa.Column("response_status", sa.Integer),
    sa.Column("duration_ms", sa.Integer, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("response_excerpt", sa.Text),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)

# Every user the gateway has seen: the address their token's `email` claim gave, and
# whether they want mail (shared/users.py).
users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("email", sa.Text),
    sa.Column("email_notifications", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

# One row per mail per (event, user), claimed before the SMTP server is asked and marked
# sent after it accepted, so a redelivered message does not mail anyone twice
# (services/notifier/mail.py). `claimed_until` is the lease of the sender trying it.
mails = sa.Table(
    "mails",
    metadata,
    sa.Column("event_id", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("message_id", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=False),
    sa.Column("sent_at", sa.DateTime(timezone=True)),
)

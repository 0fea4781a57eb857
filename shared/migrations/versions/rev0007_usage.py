"""owner_usage and photos.counted: each owner's quota usage kept by triggers.

A grant batch read its owners' usage by counting every kept or pending photo of theirs:
3.5-7 ms a batch once owners had thousands, the largest share of a grant's latency. On
PostgreSQL the sums are now kept as photos change. Whether a photo counts depends on the
time (a pending upload stops counting when its URL lapses), so each row records whether
it counted at its last write (`counted`, set by a row trigger), statement triggers add
the changes of the counted rows to `owner_usage`, and `owner_usage_now` retires its owners'
lapsed uploads (a write that recomputes `counted`) before reading their sums. The rule is
shared.reservations.usage_query's; tests/test_usage.py holds the two equal. SQLite keeps
counting photos (one process, small installs): the column and table stay empty there.

Revision ID: 0007_usage
Revises: 0006_multipart
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_usage"
down_revision = "0006_multipart"
branch_labels = None
depends_on = None

# The uploads whose counting may lapse (the index's condition, owner_usage_now's too).
LAPSING = "counted AND status IN ('pending', 'deleted')"

COUNTED = """
CREATE FUNCTION photos_counted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- A grant counts until its URL lapses, even once deleted, unless it was multipart.
    NEW.counted := NEW.status IN ('verified', 'ready')
        OR ((NEW.status = 'pending' OR (NEW.status = 'deleted' AND NEW.upload_id IS NULL))
            AND NEW.upload_expires_at > now());
    RETURN NEW;
END
$$
"""

NEW_ROWS = """
        SELECT n.owner_id, 1 AS photos, coalesce(n.size, n.declared_size) AS bytes,
               (n.status IN ('pending', 'deleted'))::int AS pending
        FROM new_photos AS n WHERE n.counted"""
OLD_ROWS = """
        SELECT o.owner_id, -1 AS photos, -coalesce(o.size, o.declared_size) AS bytes,
               -(o.status IN ('pending', 'deleted'))::int AS pending
        FROM old_photos AS o WHERE o.counted"""
# Transition tables: a trigger for one kind of statement each.
STATEMENTS = {
    "INSERT": ("REFERENCING NEW TABLE AS new_photos", [NEW_ROWS]),
    "UPDATE": (
        "REFERENCING OLD TABLE AS old_photos NEW TABLE AS new_photos",
        [NEW_ROWS, OLD_ROWS],
    ),
    "DELETE": ("REFERENCING OLD TABLE AS old_photos", [OLD_ROWS]),
}


def deltas(statement: str) -> str:
    """The function adding the counted rows a statement changed to their owners' sums.
    Owners in one order: statements changing several owners' sums do not deadlock."""
    rows = "\n        UNION ALL".join(STATEMENTS[statement][1])
    return f"""
CREATE FUNCTION photos_usage_{statement.lower()}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO owner_usage AS u (owner_id, photos, bytes, pending)
    SELECT d.owner_id, sum(d.photos), sum(d.bytes), sum(d.pending)
    FROM ({rows}
    ) AS d
    GROUP BY d.owner_id
    HAVING sum(d.photos) <> 0 OR sum(d.bytes) <> 0 OR sum(d.pending) <> 0
    ORDER BY d.owner_id
    ON CONFLICT (owner_id) DO UPDATE SET
        photos = u.photos + excluded.photos,
        bytes = u.bytes + excluded.bytes,
        pending = u.pending + excluded.pending;
    RETURN NULL;
END
$$
"""  # noqa: S608 (this module's constants only)


# The sums a grant batch checks its requests against, in one round trip and no explicit
# transaction: each owner's row made if missing (the batch's write locks it), their
# lapsed uploads retired (a write recomputes `counted`; the partial index finds them).
OWNER_USAGE_NOW = """
CREATE FUNCTION owner_usage_now(owners text[])
RETURNS TABLE (owner_id text, photos bigint, bytes bigint, pending bigint)
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO owner_usage AS u (owner_id, photos, bytes, pending)
    SELECT o, 0, 0, 0 FROM unnest(owners) AS o
    WHERE NOT EXISTS (SELECT FROM owner_usage AS e WHERE e.owner_id = o)
    ON CONFLICT DO NOTHING;
    UPDATE photos AS p SET counted = false
    WHERE p.owner_id = ANY(owners) AND p.upload_expires_at <= now()
        AND p.counted AND p.status IN ('pending', 'deleted');
    RETURN QUERY
    SELECT u.owner_id, u.photos, u.bytes, u.pending
    FROM owner_usage AS u WHERE u.owner_id = ANY(owners);
END
$$
"""

BACKFILL = """
INSERT INTO owner_usage (owner_id, photos, bytes, pending)
SELECT owner_id, count(*), sum(coalesce(size, declared_size)),
       count(*) FILTER (WHERE status IN ('pending', 'deleted'))
FROM photos WHERE counted GROUP BY owner_id
"""


def upgrade() -> None:
    op.add_column(
        "photos", sa.Column("counted", sa.Boolean(), server_default=sa.false(), nullable=False)
    )
    op.create_index(
        "photos_counted_lapsing",
        "photos",
        ["owner_id", "upload_expires_at"],
        postgresql_where=sa.text(LAPSING),
        sqlite_where=sa.text(LAPSING),
    )
    op.create_table(
        "owner_usage",
        sa.Column("owner_id", sa.Text(), nullable=False),
        sa.Column("photos", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("pending", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("owner_id"),
    )
    if op.get_bind().dialect.name != "postgresql":
        return
    # The upgrade's transaction holds photos locked from the ALTER on: no write is lost
    # between the backfill and the triggers.
    op.execute(COUNTED)
    op.execute(
        "CREATE TRIGGER photos_counted BEFORE INSERT OR UPDATE ON photos"
        " FOR EACH ROW EXECUTE FUNCTION photos_counted()"
    )
    op.execute("UPDATE photos SET counted = counted")
    op.execute(BACKFILL)
    for statement, (transitions, _) in STATEMENTS.items():
        name = f"photos_usage_{statement.lower()}"
        op.execute(deltas(statement))
        op.execute(
            f"CREATE TRIGGER {name} AFTER {statement} ON photos {transitions}"
            f" FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
        )
    op.execute(OWNER_USAGE_NOW)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION owner_usage_now(text[])")
        for statement in STATEMENTS:
            name = f"photos_usage_{statement.lower()}"
            op.execute(f"DROP TRIGGER {name} ON photos")
            op.execute(f"DROP FUNCTION {name}()")
        op.execute("DROP TRIGGER photos_counted ON photos")
        op.execute("DROP FUNCTION photos_counted()")
    op.drop_table("owner_usage")
    op.drop_index("photos_counted_lapsing", table_name="photos")
    # SQLite rebuilds the table to drop a column; see revision 0002 for why the timestamp
    # columns are declared rather than reflected.
    timestamps = (
        sa.Column("upload_expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True)),
    )
    with op.batch_alter_table("photos", reflect_args=timestamps) as batch:
        batch.drop_column("counted")

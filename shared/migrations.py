"""Schema migrations: an ordered list of SQL steps that run on PostgreSQL and SQLite alike.

Applied at service start-up (or by `darkroom migrate`), each in its own transaction,
recorded in `darkroom_schema`. Never edit a released step; append a new one.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

# "TIMESTAMP WITH TIME ZONE" is a real type on PostgreSQL and a harmless name on SQLite.
MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (
        1,
        "photos, renditions, outbox",
        (
            """CREATE TABLE photos (
            id TEXT PRIMARY KEY,
            owner_id TEXT NOT NULL,
            status TEXT NOT NULL,
            object_key TEXT NOT NULL UNIQUE,
            filename TEXT NOT NULL,
            trace_id TEXT NOT NULL,
            declared_type TEXT NOT NULL,
            declared_size BIGINT NOT NULL,
            content_type TEXT,
            size BIGINT,
            width INTEGER,
            height INTEGER,
            etag TEXT,
            reason TEXT,
            reason_detail TEXT,
            upload_expires_at TIMESTAMP WITH TIME ZONE NOT NULL,
            created_at TIMESTAMP WITH TIME ZONE NOT NULL,
            updated_at TIMESTAMP WITH TIME ZONE NOT NULL
        )""",
            "CREATE INDEX photos_owner_created ON photos (owner_id, created_at, id)",
            "CREATE INDEX photos_status_expiry ON photos (status, upload_expires_at)",
            """CREATE TABLE renditions (
            photo_id TEXT NOT NULL REFERENCES photos (id),
            name TEXT NOT NULL,
            object_key TEXT NOT NULL,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            content_type TEXT NOT NULL,
            size BIGINT NOT NULL,
            PRIMARY KEY (photo_id, name)
        )""",
            """CREATE TABLE outbox (
            id TEXT PRIMARY KEY,
            routing_key TEXT NOT NULL,
            body TEXT NOT NULL,
            created_at TIMESTAMP WITH TIME ZONE NOT NULL,
            claimed_until TIMESTAMP WITH TIME ZONE
        )""",
            "CREATE INDEX outbox_created ON outbox (created_at)",
        ),
    ),
    (
        3,
        "photo facts: digest, placeholder, EXIF, location opt-in",
        (
            "ALTER TABLE photos ADD COLUMN keep_location BOOLEAN NOT NULL DEFAULT FALSE",
            "ALTER TABLE photos ADD COLUMN sha256 TEXT",
            "ALTER TABLE photos ADD COLUMN placeholder TEXT",
            "ALTER TABLE photos ADD COLUMN taken_at TIMESTAMP WITH TIME ZONE",
            "ALTER TABLE photos ADD COLUMN taken_at_local TEXT",
            "ALTER TABLE photos ADD COLUMN camera_make TEXT",
            "ALTER TABLE photos ADD COLUMN camera_model TEXT",
            "ALTER TABLE photos ADD COLUMN lens_model TEXT",
            "ALTER TABLE photos ADD COLUMN exposure_time DOUBLE PRECISION",
            "ALTER TABLE photos ADD COLUMN f_number DOUBLE PRECISION",
            "ALTER TABLE photos ADD COLUMN iso INTEGER",
            "ALTER TABLE photos ADD COLUMN focal_length DOUBLE PRECISION",
            "ALTER TABLE photos ADD COLUMN gps_latitude DOUBLE PRECISION",
            "ALTER TABLE photos ADD COLUMN gps_longitude DOUBLE PRECISION",
            "CREATE INDEX photos_owner_sha256 ON photos (owner_id, sha256)",
            "CREATE INDEX photos_owner_taken ON photos (owner_id, taken_at)",
        ),
    ),
    (
        2,
        "api keys",
        (
            """CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            secret_hash TEXT NOT NULL UNIQUE,
            scopes TEXT NOT NULL,
            created_at TIMESTAMP WITH TIME ZONE NOT NULL,
            revoked_at TIMESTAMP WITH TIME ZONE
        )""",
        ),
    ),
)

_LOCK_ID = 0x6461726B  # "dark": serialises concurrent migrators on PostgreSQL


async def _applied(conn: AsyncConnection) -> set[int]:
    await conn.execute(
        sa.text(
            "CREATE TABLE IF NOT EXISTS darkroom_schema ("
            " version INTEGER PRIMARY KEY, description TEXT NOT NULL,"
            " applied_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP)"
        )
    )
    rows = await conn.execute(sa.text("SELECT version FROM darkroom_schema"))
    return {r[0] for r in rows}


async def migrate(engine: AsyncEngine) -> list[int]:
    """Apply pending steps; returns the versions applied now. Safe to run from many replicas."""
    applied_now: list[int] = []
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            await conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({_LOCK_ID})"))
        done = await _applied(conn)
        for version, description, statements in MIGRATIONS:
            if version in done:
                continue
            for statement in statements:
                await conn.execute(sa.text(statement))
            await conn.execute(
                sa.text("INSERT INTO darkroom_schema (version, description) VALUES (:v, :d)"),
                {"v": version, "d": description},
            )
            applied_now.append(version)
    return applied_now

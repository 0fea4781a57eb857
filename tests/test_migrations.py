"""Schema migrations: a fresh database, one made before Alembic, several replicas at once,
and `darkroom migrate`, on SQLite and on real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from services.cli import main as darkroom
from shared.db import Database, create_engine
from shared.facts import Camera, Exposure, Location, PhotoFacts
from shared.migrations import status, upgrade
from shared.store import PhotoStatus, RenditionRecord, Store
from shared.tables import metadata

# What the hand-written migrations (steps 1, 3 and 2, in that order) executed, kept as
# they were released: the databases deployed before Alembic look exactly like this.
LEGACY_DDL = (
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
    """CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL,
    revoked_at TIMESTAMP WITH TIME ZONE
    )""",
    "CREATE TABLE darkroom_schema ("
    " version INTEGER PRIMARY KEY, description TEXT NOT NULL,"
    " applied_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP)",
    "INSERT INTO darkroom_schema (version, description) VALUES"
    " (1, 'photos, renditions, outbox'),"
    " (3, 'photo facts: digest, placeholder, EXIF, location opt-in'),"
    " (2, 'api keys')",
)

# The photos table as the old store wrote to it (typed, so values are stored as it did).
_TIME = sa.DateTime(timezone=True)
legacy_photos = sa.table(
    "photos",
    *[sa.column(name, sa.Text()) for name in ("id", "owner_id", "status", "object_key")],
    *[sa.column(name, sa.Text()) for name in ("filename", "trace_id", "declared_type")],
    *[sa.column(name, sa.Text()) for name in ("content_type", "etag", "sha256", "placeholder")],
    *[sa.column(name, sa.Text()) for name in ("taken_at_local", "camera_make", "camera_model")],
    sa.column("lens_model", sa.Text()),
    *[sa.column(name, sa.Integer()) for name in ("declared_size", "size", "width", "height")],
    sa.column("iso", sa.Integer()),
    sa.column("keep_location", sa.Boolean()),
    *[sa.column(name, sa.Float()) for name in ("exposure_time", "f_number", "focal_length")],
    *[sa.column(name, sa.Float()) for name in ("gps_latitude", "gps_longitude")],
    *[sa.column(name, _TIME) for name in ("upload_expires_at", "created_at", "updated_at")],
    sa.column("taken_at", _TIME),
)

legacy_renditions = sa.table(
    "renditions",
    *[sa.column(name, sa.Text()) for name in ("photo_id", "name", "object_key", "content_type")],
    *[sa.column(name, sa.Integer()) for name in ("width", "height", "size")],
)

# Every revision after the one that stamps a database made before Alembic, in order.
AFTER_0001 = [
    "0002",
    "0003_albums",
    "0004_webhooks",
    "0005_mail",
    "0006_multipart",
    "0007_usage",
    "0008_renditions",
]

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
TAKEN = datetime(2024, 5, 1, 12, 3, 22, tzinfo=UTC)


def legacy_photo(photo_id: str, status: str, **values: Any) -> dict[str, Any]:
    return {
        "id": photo_id,
        "owner_id": "alice",
        "status": status,
        "object_key": f"originals/alice/{photo_id}",
        "filename": "a.jpg",
        "trace_id": "t",
        "declared_type": "image/jpeg",
        "declared_size": 1234,
        "upload_expires_at": NOW + timedelta(minutes=15),
        "created_at": NOW,
        "updated_at": NOW,
        **values,
    }


READY_WITH_EVERYTHING = legacy_photo(
    "a" * 32,
    "ready",
    content_type="image/jpeg", size=1234, width=10, height=20, etag="e",
    keep_location=True, sha256="ab" * 32, placeholder="3OcRJYB4d3h/iIeHeEh3eIhw+j2w",
    taken_at=TAKEN, taken_at_local="2024-05-01T14:03:22+02:00",
    camera_make="Fujifilm", camera_model="X-T5", lens_model="XF35mmF1.4 R",
    exposure_time=0.004, f_number=2.8, iso=200, focal_length=35.0,
    gps_latitude=48.858, gps_longitude=2.35,
)  # fmt: skip
READY_WITH_LITTLE = legacy_photo(
    "b" * 32, "ready", content_type="image/png", size=1, width=1, height=1,
    sha256="cd" * 32, placeholder="AAAA", gps_latitude=1.0,
)  # fmt: skip
PENDING = legacy_photo("c" * 32, "pending")
# Its renditions as the old store wrote them, out of name order.
LEGACY_RENDITIONS = [
    RenditionRecord(
        name=name, object_key=f"renditions/a/{name}", width=w, height=w, content_type=t, size=w * 9
    )
    for name, w, t in (("thumb", 256, "image/webp"), ("preview", 1280, "image/jpeg"))
]


async def build_legacy(engine: AsyncEngine) -> None:
    """A database as the release before Alembic left it, with photos in it."""
    async with engine.begin() as conn:
        for statement in LEGACY_DDL:
            await conn.execute(sa.text(statement))
        for photo in (READY_WITH_EVERYTHING, READY_WITH_LITTLE, PENDING):
            await conn.execute(sa.insert(legacy_photos).values(photo))
        for r in LEGACY_RENDITIONS:
            made = {"photo_id": READY_WITH_EVERYTHING["id"], **r.model_dump()}
            await conn.execute(sa.insert(legacy_renditions).values(made))


@pytest.fixture(params=["sqlite", "postgres"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite:///{tmp_path / 'migrations.sqlite3'}"
    engine = create_engine(url)
    yield engine
    await engine.dispose()


def drift(conn: Connection) -> list[Any]:
    return list(compare_metadata(MigrationContext.configure(conn), metadata))


async def tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))


async def test_a_fresh_database_upgrades_from_empty_to_the_tables_schema(
    engine: AsyncEngine,
) -> None:
    assert (await status(engine)).current is None
    assert await upgrade(engine) == ["0001", *AFTER_0001]
    assert await upgrade(engine) == []
    async with engine.connect() as conn:
        assert await conn.run_sync(drift) == []
    found = await status(engine)
    assert (found.current, found.behind) == (found.head, False)


async def test_a_database_made_before_alembic_is_stamped_and_upgraded_with_its_facts(
    engine: AsyncEngine,
) -> None:
    await build_legacy(engine)
    before = await status(engine)
    assert (before.current, before.behind) == ("0001", True)
    assert await upgrade(engine) == AFTER_0001
    assert {"darkroom_schema", "renditions"}.isdisjoint(await tables(engine))
    store = Store(Database(engine))
    full = await store.get(READY_WITH_EVERYTHING["id"])
    assert full is not None and full.status is PhotoStatus.READY and full.keep_location
    assert full.facts == PhotoFacts(
        sha256="ab" * 32,
        placeholder="3OcRJYB4d3h/iIeHeEh3eIhw+j2w",
        taken_at=TAKEN,
        taken_at_local="2024-05-01T14:03:22+02:00",
        camera=Camera(make="Fujifilm", model="X-T5", lens="XF35mmF1.4 R"),
        exposure=Exposure(exposure_time=0.004, f_number=2.8, iso=200, focal_length=35.0),
        location=Location(latitude=48.858, longitude=2.35),
    )
    assert full.renditions == (LEGACY_RENDITIONS[1], LEGACY_RENDITIONS[0])
    # Half a position is no location; nothing else was recorded.
    little = await store.get(READY_WITH_LITTLE["id"])
    assert little is not None
    assert little.facts == PhotoFacts(sha256="cd" * 32, placeholder="AAAA")
    pending = await store.get(PENDING["id"])
    assert pending is not None and (pending.status, pending.facts) == (PhotoStatus.PENDING, None)
    assert pending.renditions == little.renditions == ()
    assert pending.created_at == NOW
    # The columns queries filter on are still there, and still answer.
    assert await store.ready_with_sha256("alice", "ab" * 32) == full
    listed = await store.owner_page("alice", limit=10, taken_from=TAKEN)
    assert [row["id"] for row in listed] == [full.id]
    [row] = await store.page_rows("alice", [full.id])
    assert json.loads(row["renditions"]) == [r.model_dump() for r in full.renditions]


async def test_an_upgraded_database_has_exactly_the_schema_of_a_fresh_one(
    postgres_url: str,
) -> None:
    engine = create_engine(postgres_url)
    try:
        await build_legacy(engine)
        await upgrade(engine)
        async with engine.connect() as conn:
            assert await conn.run_sync(drift) == []
    finally:
        await engine.dispose()


async def test_replicas_starting_together_migrate_once(postgres_url: str) -> None:
    engines = [create_engine(postgres_url) for _ in range(3)]
    try:
        await build_legacy(engines[0])
        applied = await asyncio.gather(*(upgrade(e) for e in engines))
        assert sorted(applied) == [
            [],
            [],
            AFTER_0001,
        ]
    finally:
        for engine in engines:
            await engine.dispose()


def test_migrate_applies_and_status_tells_whether_the_database_is_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DARKROOM_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.sqlite3'}")

    def run(*argv: str) -> tuple[int, str]:
        with pytest.raises(SystemExit) as exited:
            darkroom(list(argv))
        return int(exited.value.code or 0), capsys.readouterr().out

    head = AFTER_0001[-1]
    assert run("migrate", "--status") == (1, f"current: (empty database)\nhead:    {head}\n")
    assert run("migrate") == (
        0,
        f"applied {', '.join(['0001', *AFTER_0001])}\n",
    )
    assert run("migrate", "--status") == (0, f"current: {head}\nhead:    {head}\n")
    assert run("migrate") == (0, "schema is up to date\n")

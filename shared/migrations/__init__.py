"""Schema migrations: Alembic revisions in `versions/`, generated from `shared.tables`.

Services upgrade at start (unless `DARKROOM_MIGRATE_ON_START=false`), `darkroom migrate`
does it on demand. All of an upgrade runs in one transaction; on PostgreSQL that
transaction first takes an advisory lock, so replicas starting together migrate one
after the other and the later ones find nothing left to do.

A database made before Alembic carries the old `darkroom_schema` table (steps 1, 2 and 3)
and no `alembic_version`. Its schema is exactly revision 1's, so it is stamped there,
upgraded like any other, and `darkroom_schema` is dropped in the same transaction: one
record of the schema version, and a release from before Alembic started against it
fails at once (it tries to create tables that exist) instead of serving requests
against columns it does not know.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.errors import ConfigurationError

SCRIPTS = Path(__file__).parent
# The revision whose schema the hand-written steps 1, 2 and 3 created.
LEGACY_REVISION = "0001"
LEGACY_STEPS = {1, 2, 3}
_LOCK_ID = 0x6461726B  # "dark": serialises concurrent migrators on PostgreSQL


@dataclass(frozen=True)
class SchemaStatus:
    current: str | None  # None: nothing applied yet
    head: str

    @property
    def behind(self) -> bool:
        return self.current != self.head


def alembic_config(*, url: str | None = None, connection: Connection | None = None) -> Config:
    """Alembic's configuration, built here rather than read from an alembic.ini, so the
    installed package finds its scripts wherever it lives."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


async def upgrade(engine: AsyncEngine) -> list[str]:
    """Bring the schema to the newest revision; returns the revisions applied now."""
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            await conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({_LOCK_ID})"))
        return await conn.run_sync(_upgrade)


async def status(engine: AsyncEngine) -> SchemaStatus:
    async with engine.connect() as conn:
        return await conn.run_sync(_status)


def _upgrade(conn: Connection) -> list[str]:
    config = alembic_config(connection=conn)
    before = _current(conn)
    legacy = before is None and _is_legacy(conn)
    if legacy:
        command.stamp(config, LEGACY_REVISION)
        before = LEGACY_REVISION
    command.upgrade(config, "head")
    if legacy:
        conn.execute(sa.text("DROP TABLE darkroom_schema"))
    scripts = ScriptDirectory.from_config(config)
    applied = scripts.iterate_revisions(_current(conn), before)
    return [script.revision for script in reversed(list(applied))]


def _status(conn: Connection) -> SchemaStatus:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    current = _current(conn)
    if current is None and _is_legacy(conn):
        # What the next upgrade stamps it as; nothing is written here.
        current = LEGACY_REVISION
    return SchemaStatus(current, head)


def _current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _is_legacy(conn: Connection) -> bool:
    if not sa.inspect(conn).has_table("darkroom_schema"):
        return False
    done = {row[0] for row in conn.execute(sa.text("SELECT version FROM darkroom_schema"))}
    if not done >= LEGACY_STEPS:
        raise ConfigurationError(
            f"the database has schema steps {sorted(done)} of {sorted(LEGACY_STEPS)}: "
            "start the release that made it once, then this one"
        )
    return True

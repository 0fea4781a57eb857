"""An owner's photos, a page at a time: newest first, keyset-paged on (created_at, id).

A listing page is the gateway's heaviest read, and clients poll it. It takes two steps:
`owner_page` reads the page's keys (each photo's id, its row's version, its album's
`reveal_at`, and `created_at` for the cursor), and `page_rows` reads the whole rows of
only those photos whose item the gateway has not built for this version in this signing
window. A repeated page reads 50 short keys instead of about 75 KB of facts and
renditions (the statement's decoding and the cache keys' hashing were a third of a page's
gateway CPU). A row's version changes with every update of it: PostgreSQL's `xmin`,
whatever statement made the change; on SQLite `updated_at`, which every update sets
(shared/tables.py).

On PostgreSQL each statement is compiled once per combination of filters (`Compiled`)
and run on the asyncpg connection outside a transaction (one statement reads one
snapshot). SQLite runs the same queries through SQLAlchemy.

A page row is a mapping: the photo's columns its view reads (VIEWED, and `facts` and
`renditions` as their JSON text, `renditions` an array of RenditionRecord's fields by
name, or null), its `version`, and its album's `reveal_at`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from shared.db import Compiled, Database
from shared.records import PhotoStatus
from shared.tables import albums, photos

PageRow = Mapping[str, Any]
# The optional filters, by the keyword each is given as.
FILTERS = ("before", "statuses", "taken_from", "taken_to", "album_id")


def owner_query(
    columns: Sequence[sa.ColumnElement[Any] | sa.FromClause],
    present: Collection[str],
    *,
    arrays: bool,
) -> sa.Select[Any]:
    """`columns` of an owner's photos, newest first, with the filters `present` (of
    FILTERS) as bind parameters: rows inserted meanwhile sort before the cursor, so later
    pages neither skip nor repeat. `arrays`: the statuses as one array parameter
    (asyncpg), else as an expanding list."""
    c, p = photos.c, sa.bindparam
    query = (
        sa.select(*columns)
        .select_from(photos.outerjoin(albums, albums.c.id == c.album_id))
        .where(c.owner_id == p("owner_id"), c.status != PhotoStatus.DELETED.value)
    )
    if "album_id" in present:
        query = query.where(c.album_id == p("album_id"))
    if "taken_from" in present or "taken_to" in present:
        # Matching a range would tell when a sealed photo was taken.
        now = p("now", type_=c.created_at.type)
        sealed = sa.select(albums.c.id).where(albums.c.reveal_at > now)
        query = query.where(c.album_id.is_(None) | c.album_id.not_in(sealed))
    if "statuses" in present:
        if arrays:
            query = query.where(c.status == sa.any_(p("statuses", type_=postgresql.ARRAY(sa.Text))))
        else:
            query = query.where(c.status.in_(p("statuses", expanding=True)))
    if "before" in present:
        created = p("before_created", type_=c.created_at.type)
        photo_id = p("before_id", type_=c.id.type)
        query = query.where(
            sa.or_(c.created_at < created, sa.and_(c.created_at == created, c.id < photo_id))
        )
    if "taken_from" in present:
        query = query.where(c.taken_at >= p("taken_from", type_=c.taken_at.type))
    if "taken_to" in present:
        query = query.where(c.taken_at < p("taken_to", type_=c.taken_at.type))
    return query.order_by(c.created_at.desc(), c.id.desc()).limit(p("limit", type_=sa.Integer))


def bind_values(owner_id: str, limit: int, filters: Mapping[str, Any]) -> dict[str, Any]:
    """The bind parameters of `owner_query` for these filters (those given and not empty)."""
    values: dict[str, Any] = {"owner_id": owner_id, "limit": limit, "now": datetime.now(UTC)}
    for name, value in filters.items():
        if name not in FILTERS:
            raise TypeError(f"no listing filter {name!r}")
        if value is None or (name == "statuses" and not value):
            continue
        if name == "before":
            values["before_created"], values["before_id"] = value
        elif name == "statuses":
            values["statuses"] = [PhotoStatus(s).value for s in value]
        else:
            values[name] = value
    return values


def present(values: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(
        name for name in FILTERS if name in values or (name == "before" and "before_id" in values)
    )


# What a photo's view reads (services/gateway/views.py), and no more: every column
# decoded is decoded 50 times a page.
VIEWED = (
    "id",
    "owner_id",
    "album_id",
    "status",
    "reason",
    "reason_detail",
    "filename",
    "content_type",
    "declared_type",
    "size",
    "declared_size",
    "width",
    "height",
    "created_at",
    "object_key",
)
_KEYS = (photos.c.id, photos.c.created_at)
_VIEWED = (
    *(photos.c[name] for name in VIEWED),
    # As text: the view reads each through a memo keyed by it (services/gateway/views.py).
    sa.cast(photos.c.facts, sa.Text).label("facts"),
    sa.cast(photos.c.renditions, sa.Text).label("renditions"),
)


def _columns(
    columns: Sequence[sa.ColumnElement[Any]], *, sqlite: bool
) -> list[sa.ColumnElement[Any]]:
    """`columns`, the row's version and its album's reveal_at."""
    version = photos.c.updated_at if sqlite else sa.literal_column("photos.xmin")
    return [*columns, version.label("version"), albums.c.reveal_at.label("reveal_at")]


@cache
def _keys_statement(filters: frozenset[str]) -> Compiled:
    query = owner_query(_columns(_KEYS, sqlite=False), filters, arrays=True)
    return Compiled.of(query, "owner_id", "limit", "now", *_names(filters))


def _names(filters: frozenset[str]) -> list[str]:
    before = ("before_created", "before_id")
    return [n for f in sorted(filters) for n in (before if f == "before" else (f,))]


def _rows_query(*, sqlite: bool) -> sa.Select[Any]:
    ids = photos.c.id
    wanted = (
        ids.in_(sa.bindparam("ids", expanding=True))
        if sqlite
        else ids == sa.any_(sa.bindparam("ids", type_=postgresql.ARRAY(sa.Text)))
    )
    return (
        sa.select(*_columns(_VIEWED, sqlite=sqlite))
        .select_from(photos.outerjoin(albums, albums.c.id == photos.c.album_id))
        .where(
            photos.c.owner_id == sa.bindparam("owner_id"),
            wanted,
            photos.c.status != PhotoStatus.DELETED.value,
        )
    )


@cache
def _rows_statement() -> Compiled:
    return Compiled.of(_rows_query(sqlite=False), "owner_id", "ids")


async def owner_page(db: Database, owner_id: str, *, limit: int, **filters: Any) -> list[PageRow]:
    """The keys of up to `limit` of the owner's photos (filters: FILTERS): `id`,
    `created_at`, `version` and `reveal_at`."""
    values = bind_values(owner_id, limit, filters)
    if not db.is_sqlite:
        return await db.fetch(_keys_statement(present(values)), **values)
    query = owner_query(_columns(_KEYS, sqlite=True), present(values), arrays=False)
    return await _sqlite_rows(db, query, values)


async def page_rows(db: Database, owner_id: str, ids: Sequence[str]) -> list[PageRow]:
    """The page rows of these photos of the owner's, as they are now (in no order;
    deleted ones left out)."""
    values = {"owner_id": owner_id, "ids": list(ids)}
    if not db.is_sqlite:
        return await db.fetch(_rows_statement(), **values)
    return await _sqlite_rows(db, _rows_query(sqlite=True), values)


async def _sqlite_rows(
    db: Database, query: sa.Select[Any], values: dict[str, Any]
) -> list[PageRow]:
    async with db.transaction() as conn:
        return [_utc(row) for row in (await conn.execute(query, values)).mappings()]


def _utc(row: Mapping[str, Any]) -> dict[str, Any]:
    # SQLite hands datetimes back naive; everything stored is UTC.
    return {
        k: v.replace(tzinfo=UTC) if isinstance(v, datetime) and v.tzinfo is None else v
        for k, v in row.items()
    }

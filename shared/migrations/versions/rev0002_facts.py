"""Photo facts in one JSON column.

`photos.facts` holds what rendering learnt, in the shape of shared.facts.PhotoFacts
(`model_dump(mode="json")`). The per-fact columns are folded into it for every rendered
photo (the ones with a sha256) and dropped; sha256 and taken_at stay as columns because
queries filter on them. The shape is spelled out here rather than taken from PhotoFacts:
this revision must keep producing what it produced when it was written.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_TEXT = ("placeholder", "taken_at_local", "camera_make", "camera_model", "lens_model")
_FLOAT = ("exposure_time", "f_number", "focal_length", "gps_latitude", "gps_longitude")
_OLD: list[sa.ColumnClause[Any]] = [sa.column(name, sa.Text()) for name in _TEXT]
_OLD += [sa.column(name, sa.Float()) for name in _FLOAT]
_OLD += [sa.column("iso", sa.Integer())]

photos = sa.table(
    "photos",
    sa.column("id", sa.Text()),
    sa.column("sha256", sa.Text()),
    sa.column("taken_at", sa.DateTime(timezone=True)),
    sa.column("facts", sa.JSON(none_as_null=True)),
    *_OLD,
)


# SQLite rebuilds the table to drop columns. Reflection reads the timestamp columns the
# hand-written steps declared ("TIMESTAMP WITH TIME ZONE") as NUMERIC; declaring them
# here gives the rebuilt table the types a fresh database has. (New columns every time:
# a column belongs to one table.)
def _timestamps() -> tuple[sa.Column[datetime], ...]:
    return (
        sa.Column("upload_expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True)),
    )


def upgrade() -> None:
    op.add_column("photos", sa.Column("facts", sa.JSON(none_as_null=True), nullable=True))
    for rows in _rendered(*_OLD):
        _update(rows, {"facts": [_facts(row) for row in rows]})
    with op.batch_alter_table("photos", reflect_args=_timestamps()) as batch:
        for column in _OLD:
            batch.drop_column(column.name)


def downgrade() -> None:
    for column in _OLD:
        op.add_column("photos", sa.Column(column.name, column.type, nullable=True))
    for rows in _rendered(photos.c.facts):
        _update(rows, {name: [_unfolded(row.facts)[name] for row in rows] for name in _names()})
    with op.batch_alter_table("photos", reflect_args=_timestamps()) as batch:
        batch.drop_column("facts")


def _names() -> list[str]:
    return [column.name for column in _OLD]


def _rendered(*columns: Any) -> Iterator[list[Any]]:
    """Rendered photos in batches, in id order, so memory stays bounded."""
    bind, after = op.get_bind(), ""
    while True:
        query = (
            sa.select(photos.c.id, photos.c.taken_at, photos.c.sha256, *columns)
            .where(photos.c.sha256.is_not(None), photos.c.id > after)
            .order_by(photos.c.id)
            .limit(500)
        )
        rows = list(bind.execute(query).all())
        if not rows:
            return
        yield rows
        after = rows[-1].id


def _update(rows: list[Any], values: dict[str, list[Any]]) -> None:
    params = [
        {"photo": row.id, **{f"new_{name}": column[i] for name, column in values.items()}}
        for i, row in enumerate(rows)
    ]
    stmt = (
        sa.update(photos)
        .where(photos.c.id == sa.bindparam("photo"))
        .values({name: sa.bindparam(f"new_{name}") for name in values})
    )
    op.get_bind().execute(stmt, params)


def _facts(row: Any) -> dict[str, Any]:
    location = None
    if row.gps_latitude is not None and row.gps_longitude is not None:
        location = {"latitude": row.gps_latitude, "longitude": row.gps_longitude}
    return {
        "sha256": row.sha256,
        "placeholder": row.placeholder or "",
        "taken_at": _instant(row.taken_at),
        "taken_at_local": row.taken_at_local,
        "camera": {"make": row.camera_make, "model": row.camera_model, "lens": row.lens_model},
        "exposure": {
            "exposure_time": row.exposure_time,
            "f_number": row.f_number,
            "iso": row.iso,
            "focal_length": row.focal_length,
        },
        "location": location,
    }


def _instant(value: datetime | None) -> str | None:
    # Stored as UTC (SQLite hands it back naive); written as pydantic writes UTC times.
    if value is None:
        return None
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _unfolded(facts: dict[str, Any]) -> dict[str, Any]:
    camera, exposure = facts.get("camera") or {}, facts.get("exposure") or {}
    location = facts.get("location") or {}
    return {
        "placeholder": facts.get("placeholder"),
        "taken_at_local": facts.get("taken_at_local"),
        "camera_make": camera.get("make"),
        "camera_model": camera.get("model"),
        "lens_model": camera.get("lens"),
        "exposure_time": exposure.get("exposure_time"),
        "f_number": exposure.get("f_number"),
        "focal_length": exposure.get("focal_length"),
        "gps_latitude": location.get("latitude"),
        "gps_longitude": location.get("longitude"),
        "iso": exposure.get("iso"),
    }

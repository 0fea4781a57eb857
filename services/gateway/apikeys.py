"""Server-to-server API keys: how an app's backend talks to Darkroom.

A key reads `drk_<id>_<secret>`, the secret 256 random bits. Only the SHA-256 of the whole
key is stored: with that much entropy a fast hash is enough (nothing to brute-force), and
lookups go straight to the hash, so no comparison leaks timing. The id is public (it names
the key in `darkroom apikey list` and in logs); the secret is shown once, at creation.

A key carries scopes and may act for any user it names in the `X-Darkroom-User` header.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict

from shared.db import Database
from shared.tables import api_keys

PREFIX = "drk_"
SCOPES: dict[str, str] = {
    "photos:read": "list and read photos, follow download links",
    "photos:write": "grant uploads",
    "photos:delete": "delete photos",
    "account:delete": "delete a user's account and every photo in it",
    "account:preferences": "read and change a user's preferences (mail)",
}
_KEY = re.compile(r"^drk_(?P<id>[0-9a-f]{16})_(?P<secret>[A-Za-z0-9_-]{43})$")


class ApiKey(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    scopes: frozenset[str]
    created_at: datetime
    revoked_at: datetime | None


def looks_like_key(token: str) -> bool:
    return token.startswith(PREFIX)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def unknown_scopes(scopes: list[str]) -> list[str]:
    return [s for s in scopes if s not in SCOPES]


async def create_key(db: Database, name: str, scopes: list[str]) -> tuple[ApiKey, str]:
    """Record a new key; returns it and the key itself, which nothing stores."""
    if bad := unknown_scopes(scopes):
        raise ValueError(f"unknown scope(s) {', '.join(bad)}; known: {', '.join(SCOPES)}")
    key_id = secrets.token_hex(8)
    key = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    row = {
        "id": key_id,
        "name": name,
        "secret_hash": digest(key),
        "scopes": " ".join(sorted(set(scopes))),
        "created_at": datetime.now(UTC),
    }
    async with db.transaction() as conn:
        await conn.execute(sa.insert(api_keys).values(row))
    found = await lookup(db, key)
    assert found is not None
    return found, key


async def lookup(db: Database, key: str) -> ApiKey | None:
    """The key, or None if it is malformed or unknown (revoked keys are returned)."""
    if not _KEY.match(key):
        return None
    query = sa.select(api_keys).where(api_keys.c.secret_hash == digest(key))
    async with db.transaction() as conn:
        row = (await conn.execute(query)).first()
    return _api_key(row) if row else None


async def list_keys(db: Database) -> list[ApiKey]:
    query = sa.select(api_keys).order_by(api_keys.c.created_at)
    async with db.transaction() as conn:
        return [_api_key(row) for row in (await conn.execute(query)).all()]


async def revoke_key(db: Database, key_id: str) -> bool:
    """Revoke an active key at once; False if there is no such active key."""
    stmt = (
        sa.update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )
    async with db.transaction() as conn:
        return bool((await conn.execute(stmt)).rowcount)


def _api_key(row: sa.Row[Any]) -> ApiKey:
    return ApiKey.model_validate({**row._mapping, "scopes": frozenset(str(row.scopes).split())})

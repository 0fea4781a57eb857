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
from dataclasses import dataclass
from datetime import datetime

from shared.store import Store

PREFIX = "drk_"
SCOPES: dict[str, str] = {
    "photos:read": "list and read photos, follow download links",
    "photos:write": "grant uploads",
    "photos:delete": "delete photos",
    "account:delete": "delete a user's account and every photo in it",
}
_KEY = re.compile(r"^drk_(?P<id>[0-9a-f]{16})_(?P<secret>[A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class ApiKey:
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


async def create_key(store: Store, name: str, scopes: list[str]) -> tuple[ApiKey, str]:
    """Record a new key; returns it and the key itself, which nothing stores."""
    if bad := unknown_scopes(scopes):
        raise ValueError(f"unknown scope(s) {', '.join(bad)}; known: {', '.join(SCOPES)}")
    key_id = secrets.token_hex(8)
    key = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    await store.add_api_key(key_id, name, digest(key), " ".join(sorted(set(scopes))))
    found = await lookup(store, key)
    assert found is not None
    return found, key


async def lookup(store: Store, key: str) -> ApiKey | None:
    """The key, or None if it is malformed or unknown (revoked keys are returned)."""
    if not _KEY.match(key):
        return None
    row = await store.api_key_by_hash(digest(key))
    return _api_key(row) if row else None


async def list_keys(store: Store) -> list[ApiKey]:
    return [_api_key(row) for row in await store.api_key_list()]


def _api_key(row: dict[str, object]) -> ApiKey:
    created, revoked = row["created_at"], row["revoked_at"]
    assert isinstance(created, datetime)
    assert revoked is None or isinstance(revoked, datetime)
    return ApiKey(
        id=str(row["id"]),
        name=str(row["name"]),
        scopes=frozenset(str(row["scopes"]).split()),
        created_at=created,
        revoked_at=revoked,
    )

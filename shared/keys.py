"""Object keys. Always generated here, never taken from a client.

    originals/<owner digest>/<photo id>
    renditions/<owner digest>/<photo id>/<name>.<ext>

The owner digest gives every user a prefix (for purges and for spotting a key under the
wrong user) without putting a raw user id, which may be an e-mail address, into storage.
"""

from __future__ import annotations

import functools
import hashlib
import re

_ORIGINAL = re.compile(r"^originals/(?P<owner>[0-9a-f]{16})/(?P<photo>[0-9a-f]{32})$")


# Owners remembered: every grant names its owner's key prefix (1.4 us hashed, 0.2 kept).
@functools.lru_cache(maxsize=10_000)
def owner_digest(owner_id: str) -> str:
    return hashlib.sha256(owner_id.encode()).hexdigest()[:16]


ORIGINALS = "originals/"
RENDITIONS = "renditions/"


def original_key(owner_id: str, photo_id: str) -> str:
    return f"{ORIGINALS}{owner_digest(owner_id)}/{photo_id}"


def rendition_key(owner_id: str, photo_id: str, name: str, extension: str) -> str:
    return f"{renditions_prefix(owner_id, photo_id)}{name}.{extension}"


def originals_prefix(owner_id: str) -> str:
    return f"{ORIGINALS}{owner_digest(owner_id)}/"


def renditions_prefix(owner_id: str, photo_id: str = "") -> str:
    """Every rendition of one photo, or with no photo id, of the owner's every photo."""
    base = f"{RENDITIONS}{owner_digest(owner_id)}/"
    return f"{base}{photo_id}/" if photo_id else base


def photo_id_of(key: str) -> str | None:
    """The photo id an original's key names, or None for any other key."""
    match = _ORIGINAL.match(key)
    return match["photo"] if match else None

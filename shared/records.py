"""Photo records: the shapes the store reads and writes, and where a photo's status may go.

A photo's status only moves along TRANSITIONS:

    pending --> verified --> ready
       |           |           |
       +-----------+-----------+--> rejected   (from ready: replaced after verification)
    any of them, rejected too, --> deleted

`shared.store` enforces it: every move is a compare-and-set from the status the caller
observed, checked here first.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict

from shared.events import Rendition
from shared.facts import PhotoFacts


class PhotoStatus(StrEnum):
    PENDING = "pending"
    VERIFIED = "verified"
    READY = "ready"
    REJECTED = "rejected"
    DELETED = "deleted"


_S = PhotoStatus
# Where a photo may go from each status. The only place this is decided.
TRANSITIONS: Mapping[PhotoStatus, frozenset[PhotoStatus]] = MappingProxyType(
    {
        _S.PENDING: frozenset({_S.VERIFIED, _S.REJECTED, _S.DELETED}),
        _S.VERIFIED: frozenset({_S.READY, _S.REJECTED, _S.DELETED}),
        _S.READY: frozenset({_S.REJECTED, _S.DELETED}),
        _S.REJECTED: frozenset({_S.DELETED}),
        _S.DELETED: frozenset(),
    }
)


class IllegalTransition(Exception):
    """A caller asked for a move TRANSITIONS does not allow: a bug, never bad input."""


def check_transition(observed: PhotoStatus, to: PhotoStatus) -> None:
    if to not in TRANSITIONS[observed]:
        raise IllegalTransition(f"a photo cannot go from {observed} to {to}")


def _aware(value: datetime) -> datetime:
    # SQLite hands datetimes back naive; everything stored is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_aware)]


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class NewPhoto(_Record):
    id: str
    owner_id: str
    object_key: str
    filename: str
    declared_type: str
    declared_size: int
    upload_expires_at: UtcDatetime
    trace_id: str
    keep_location: bool = False  # the owner's opt-in to recording GPS
    album_id: str | None = None  # uploaded into this album
    # A multipart upload: S3's id for it, and the size of every part but the last.
    upload_id: str | None = None
    part_size: int | None = None


def part_count(size: int, part_size: int) -> int:
    """Parts of `part_size` bytes, the last holding the rest (one at least)."""
    return max(1, -(-size // part_size))


class Verified(_Record):
    """What verification established about the stored object."""

    content_type: str
    size: int
    width: int
    height: int
    etag: str | None


class RenditionRecord(Rendition):
    """A rendition as photo.ready announces it, and where it is stored."""

    object_key: str


class PhotoRecord(_Record):
    id: str
    owner_id: str
    status: PhotoStatus
    object_key: str
    filename: str
    trace_id: str
    declared_type: str
    declared_size: int
    content_type: str | None
    size: int | None
    width: int | None
    height: int | None
    etag: str | None
    reason: str | None
    reason_detail: str | None
    upload_expires_at: UtcDatetime
    created_at: UtcDatetime
    updated_at: UtcDatetime
    keep_location: bool = False
    facts: PhotoFacts | None = None  # once rendered
    album_id: str | None = None
    upload_id: str | None = None
    part_size: int | None = None
    # By name, once ready (SQL NULL until then).
    renditions: Annotated[tuple[RenditionRecord, ...], BeforeValidator(lambda v: v or ())] = ()

    @property
    def part_count(self) -> int:
        """Parts of a multipart upload (0 for a single one)."""
        return part_count(self.declared_size, self.part_size) if self.part_size else 0

    def part_length(self, number: int) -> int:
        """The exact size of part `number` (1-based): part_size, but the last is the rest."""
        assert self.part_size
        if number < self.part_count:
            return self.part_size
        return self.declared_size - self.part_size * (self.part_count - 1)

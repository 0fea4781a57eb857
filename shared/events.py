"""Darkroom's own events: one pydantic model each, carried in a versioned JSON envelope.

Wire format (UTF-8 JSON, content type `application/json`):

    {"id": "...", "type": "photo.ready", "version": 1, "time": "...Z",
     "trace_id": "...", "data": {...}}

`type` is also the routing key on the events exchange. A consumer accepts the major
`version` it knows and ignores unknown fields in `data`, so producers can add optional
fields without a flag day. Outcome events about a photo carry a deterministic id
(derived from the photo and the event type) so a re-published duplicate is recognisable
downstream, and webhook receivers dedupe on it.
"""

from __future__ import annotations

import builtins
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import InvalidMessage
from shared.facts import PhotoFacts

_EVENT_ID_NAMESPACE = uuid.UUID("6f1c1d3e-2b9a-4f4e-9a51-0d2b7c0de0a1")


class Event(BaseModel):
    """Base of every event payload. Subclasses set TYPE and VERSION."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    TYPE: ClassVar[str]
    VERSION: ClassVar[int] = 1


class UploadCompleted(Event):
    """The client says its upload finished: a hint to verify now, trusted for nothing."""

    TYPE = "upload.completed"
    photo_id: str
    owner_id: str


class PhotoDeleted(Event):
    TYPE = "photo.deleted"
    photo_id: str
    owner_id: str


class AccountDeleted(Event):
    TYPE = "account.deleted"
    owner_id: str


class PhotoVerified(Event):
    """Everything the thumbnail worker needs to render, so it never reloads the record."""

    TYPE = "photo.verified"
    VERSION = 2
    photo_id: str
    owner_id: str
    object_key: str
    etag: str | None = Field(description="the verified bytes: rendering reads only these")
    content_type: str
    size: int
    keep_location: bool = Field(description="the owner's opt-in to recording GPS")


class PhotoRejected(Event):
    TYPE = "photo.rejected"
    photo_id: str
    owner_id: str
    reason: str
    detail: str


class Rendition(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    width: int
    height: int
    content_type: str
    size: int


class PhotoReady(Event):
    TYPE = "photo.ready"
    VERSION = 2
    photo_id: str
    owner_id: str
    width: int
    height: int
    renditions: tuple[Rendition, ...]
    facts: PhotoFacts


class AlbumRevealed(Event):
    """An album's reveal time came: its photos are visible to its members and links."""

    TYPE = "album.revealed"
    album_id: str
    owner_id: str
    title: str
    reveal_at: datetime
    photo_count: int = Field(description="ready photos in the album when it was revealed")


class AlbumMemberAdded(Event):
    TYPE = "album.member_added"
    album_id: str
    owner_id: str
    user_id: str
    role: str = Field(description="contributor or viewer")


class AlbumDeleted(Event):
    """The album is gone; its photos stay with their uploaders."""

    TYPE = "album.deleted"
    album_id: str
    owner_id: str
    member_ids: tuple[str, ...] = Field(
        (),
        description="who was a member when it was deleted, the owner aside: the album's "
        "records are gone, so only the event can say whom to tell",
    )


# What people hear of, by webhook and live stream: their photos' outcomes and their
# albums' news.
USER_EVENTS: tuple[type[Event], ...] = (
    PhotoReady,
    PhotoRejected,
    PhotoDeleted,
    AlbumRevealed,
    AlbumMemberAdded,
    AlbumDeleted,
)


class WebhookTest(Event):
    """Sent to one endpoint on request (POST /v1/webhooks/{id}/test)."""

    TYPE = "webhook.test"
    webhook_id: str


class WebhookDelivery(Event):
    """One delivery to one endpoint, queued for the notifier (internal, not a webhook)."""

    TYPE = "webhook.delivery"
    delivery_id: str


class WebhookDisabled(Event):
    """An endpoint failed for too long and was disabled; its owner is mailed."""

    TYPE = "webhook.disabled"
    user_id: str
    webhook_id: str
    url: str
    failing_since: datetime


class UserCreated(Event):
    """The gateway saw a user for the first time: their first request whose token claims
    an address."""

    TYPE = "user.created"
    user_id: str
    email: str = Field(description="the token's `email` claim")


E = TypeVar("E", bound=Event)


class Envelope(BaseModel):
    model_config = ConfigDict(frozen=True)
    id: str
    type: str
    version: int = Field(ge=1)
    time: datetime
    trace_id: str
    data: dict[str, Any]

    @classmethod
    def wrap(cls, event: Event, *, trace_id: str, event_id: str | None = None) -> Envelope:
        return cls(
            id=event_id or str(uuid.uuid4()),
            type=event.TYPE,
            version=event.VERSION,
            time=datetime.now(UTC),
            trace_id=trace_id,
            data=event.model_dump(mode="json"),
        )

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, body: bytes) -> Envelope:
        try:
            return cls.model_validate_json(body)
        except ValidationError as exc:
            raise InvalidMessage(f"not a Darkroom event envelope: {_first_error(exc)}") from exc

    def open(self, model: builtins.type[E]) -> E:
        """The payload as `model`, or InvalidMessage if type, version or fields don't fit."""
        if self.type != model.TYPE:
            raise InvalidMessage(f"expected a {model.TYPE} event, got {self.type}")
        if self.version != model.VERSION:
            raise InvalidMessage(
                f"{self.type} version {self.version} is not supported (this build reads "
                f"version {model.VERSION})"
            )
        try:
            return model.model_validate(self.data)
        except ValidationError as exc:
            raise InvalidMessage(f"bad {self.type} payload: {_first_error(exc)}") from exc


class MailRequested(Event):
    """One mail to one user about one event: the mail sender's unit of work and of retry.
    `trigger` is the whole envelope of the event the mail is about; its id and the user
    make the mail's idempotency key and its Message-ID."""

    TYPE = "mail.requested"
    user_id: str
    trigger: Envelope


def outcome_event_id(event_type: str, photo_id: str) -> str:
    """Stable id for the one event of this type a photo ever has (dedupe key downstream)."""
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, f"{event_type}:{photo_id}"))


def album_event_id(event_type: str, album_id: str) -> str:
    """Stable id for the one event of this type an album ever has (album.revealed)."""
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, f"album:{event_type}:{album_id}"))


def outcome_envelope(event: Event, *, photo_id: str, trace_id: str) -> Envelope:
    """The envelope of one of a photo's outcome events, under its stable id."""
    return Envelope.wrap(event, trace_id=trace_id, event_id=outcome_event_id(event.TYPE, photo_id))


def mail_event_id(trigger_id: str, user_id: str) -> str:
    """Stable id of the mail one event sends one user: requested twice, it is one mail."""
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, f"mail:{trigger_id}:{user_id}"))


def new_trace_id() -> str:
    return uuid.uuid4().hex


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "body"
    return f"{where}: {err['msg']}"

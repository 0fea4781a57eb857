"""The shapes of webhook endpoints and their delivery log: one pydantic model per request
and answer, like `models.py` (the OpenAPI document is generated from them)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from services.gateway.album_models import Cursor
from services.gateway.models import PHOTO_ID_PATTERN, DateTime, _Shape

# Endpoints and deliveries are named like photos: 32 hex digits.
WebhookId = Annotated[str, Field(pattern=PHOTO_ID_PATTERN, examples=["0" * 32])]
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# A host name, an IPv4 address or a bracketed IPv6 one (no zone: it names an interface
# of this host), an optional port, an optional path: what can be checked before it is
# stored. http only where DARKROOM_WEBHOOK_ALLOW_PRIVATE_TARGETS allows.
_H16, _OCTET = r"[0-9A-Fa-f]{1,4}", r"(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_LS32 = rf"({_H16}:{_H16}|{_OCTET}(\.{_OCTET}){{3}})"
# RFC 3986's IPv6address: a bracketed host is an address or refused by the document.
_IPV6 = "|".join(
    [
        rf"({_H16}:){{6}}{_LS32}",
        rf"::({_H16}:){{5}}{_LS32}",
        rf"({_H16})?::({_H16}:){{4}}{_LS32}",
        *(rf"(({_H16}:){{0,{n}}}{_H16})?::({_H16}:){{{3 - n}}}{_LS32}" for n in (1, 2)),
        rf"(({_H16}:){{0,3}}{_H16})?::{_H16}:{_LS32}",
        rf"(({_H16}:){{0,4}}{_H16})?::{_LS32}",
        rf"(({_H16}:){{0,5}}{_H16})?::{_H16}",
        rf"(({_H16}:){{0,6}}{_H16})?::",
    ]
)
_HOST = rf"({_LABEL}(\.{_LABEL})*|\[({_IPV6})\])"
_PORT = r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
URL_PATTERN = rf"^https?://{_HOST}(:{_PORT})?(/[^\s#]*)?$"
EventName = Literal[
    "photo.ready",
    "photo.rejected",
    "photo.deleted",
    "album.revealed",
    "album.member_added",
    "album.deleted",
    "*",
]
DeliveryState = Literal["pending", "delivered", "failed"]

# --- requests ---


class WebhookRequest(_Shape):
    url: str = Field(
        max_length=2000,
        pattern=URL_PATTERN,
        description="https, on a host that resolves to public addresses only",
        examples=["https://example.com/hooks/darkroom"],
    )
    events: list[EventName] = Field(
        min_length=1, max_length=7, description='the event types to send, or ["*"] for all'
    )
    description: str = Field("", max_length=500)


class WebhookPath(_Shape):
    webhook_id: WebhookId


class DeliveryPath(_Shape):
    webhook_id: WebhookId
    delivery_id: WebhookId


# --- answers ---


class Webhook(_Shape):
    id: str
    url: str
    events: list[str]
    description: str
    created_at: DateTime
    failing_since: DateTime | None = Field(
        description="since when every delivery failed; null while they succeed"
    )
    disabled_at: DateTime | None = Field(
        description="when it was disabled for failing too long (nothing is sent to it "
        "then, until its enable route is called)"
    )
    previous_secret_until: DateTime | None = Field(
        description="after a rotation: until when the previous secret signs too"
    )


class NewWebhook(Webhook):
    secret: str = Field(description="whsec_...: signs every delivery; shown this once")


class WebhookPage(_Shape):
    items: list[Webhook]
    next_cursor: Cursor | None = Field(description="pass as `cursor` for the next page")


class RotatedSecret(_Shape):
    secret: str = Field(description="the new whsec_ secret; shown this once")
    previous_secret_until: DateTime = Field(
        description="until then deliveries carry a signature by each secret"
    )


class DeliveryAttempt(_Shape):
    attempt: int = Field(description="1 for the first")
    response_status: int | None = Field(description="null: no answer (see `error`)")
    duration_ms: int
    error: str | None
    response_excerpt: str | None = Field(description="the start of the response body")
    at: DateTime


class Delivery(_Shape):
    id: str
    event_id: str = Field(description="the webhook-id header: the same on every attempt")
    event_type: str
    status: DeliveryState
    attempts: list[DeliveryAttempt]
    created_at: DateTime
    updated_at: DateTime


class DeliveryPage(_Shape):
    items: list[Delivery]
    next_cursor: Cursor | None = Field(description="pass as `cursor` for the next page")


class DeliveryQueued(_Shape):
    delivery_id: str
    event_id: str

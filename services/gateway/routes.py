"""Every route the gateway serves, and the operations the document describes."""

from __future__ import annotations

from aiohttp import web

from services.gateway import (
    albums,
    docs,
    events_stream,
    links,
    me,
    members,
    multipart,
    photos,
    uploads,
    webhooks,
)
from services.gateway.pages import page_routes
from services.gateway.registry import Answer, Operation, route_defs
from shared.health import Liveness, Readiness
from shared.settings import Settings

# Served by shared.health (every service has them), described here.
HEALTH = [
    Operation("GET", "/healthz", "liveness", "Liveness", "health", {200: Answer("up", Liveness)}),
    Operation(
        "GET",
        "/readyz",
        "readiness",
        "Readiness: the database; the broker is reported, not required",
        "health",
        {200: Answer("ready", Readiness), 503: Answer("not ready", Readiness)},
    ),
]


def operations() -> list[Operation]:
    # Links before photos: /v1/photos/{photo_id}/links must not be taken for a rendition.
    return [
        *uploads.api.operations,
        *multipart.api.operations,
        *links.api.operations,
        *photos.api.operations,
        *albums.api.operations,
        *members.api.operations,
        *events_stream.api.operations,
        *webhooks.api.operations,
        *me.api.operations,
        *HEALTH,
    ]


def all_routes(settings: Settings) -> list[web.AbstractRouteDef]:
    return [*route_defs(operations()), *docs.routes, *page_routes(settings)]

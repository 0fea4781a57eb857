"""Every route the gateway serves, and the operations the document describes."""

from __future__ import annotations

import json
from importlib.resources import files

from aiohttp import web

from services.gateway import albums, docs, links, members, photos, uploads
from services.gateway.context import DEV_TOKEN
from services.gateway.registry import Answer, Operation, route_defs
from shared.health import Liveness, Readiness

pages = web.RouteTableDef()

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


@pages.get("/")
async def index(request: web.Request) -> web.Response:
    page = files("services.gateway").joinpath("static/index.html").read_text()
    page = page.replace("__DEV_TOKEN__", json.dumps(request.app[DEV_TOKEN]))
    return web.Response(text=page, content_type="text/html")


def operations() -> list[Operation]:
    # Links before photos: /v1/photos/{photo_id}/links must not be taken for a rendition.
    return [
        *uploads.api.operations,
        *links.api.operations,
        *photos.api.operations,
        *albums.api.operations,
        *members.api.operations,
        *HEALTH,
    ]


def all_routes() -> list[web.AbstractRouteDef]:
    return [*route_defs(operations()), *docs.routes, *pages]

"""Every route the gateway serves."""

from __future__ import annotations

import json
from importlib.resources import files

from aiohttp import web

from services.gateway import openapi, photos, uploads
from services.gateway.context import DEV_TOKEN

pages = web.RouteTableDef()


@pages.get("/")
async def index(request: web.Request) -> web.Response:
    page = files("services.gateway").joinpath("static/index.html").read_text()
    page = page.replace("__DEV_TOKEN__", json.dumps(request.app[DEV_TOKEN]))
    return web.Response(text=page, content_type="text/html")


def all_routes() -> list[web.AbstractRouteDef]:
    return [*uploads.routes, *photos.routes, *openapi.routes, *pages]

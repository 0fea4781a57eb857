"""The OpenAPI document at /openapi.json, and Swagger UI at /docs, served locally."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from swagger_ui_bundle import swagger_ui_path

from services.gateway.context import OPENAPI
from services.gateway.pages import DOCS_CSP, page_headers

routes = web.RouteTableDef()

# Swagger UI's own files come from the swagger-ui-bundle-v2 package (no CDN needed).
_SWAGGER_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Darkroom API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/assets/swagger-init.js"></script>
</body></html>"""

# No validator badge: it would load an image from validator.swagger.io naming this
# document's URL (and the page's CSP refuses it anyway).
_SWAGGER_INIT = (
    "window.ui = SwaggerUIBundle({url: '/openapi.json', dom_id: '#ui', deepLinking: true, "
    "validatorUrl: null});"
)


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


@routes.get("/docs")
async def docs(request: web.Request) -> web.Response:
    return web.Response(
        text=_SWAGGER_PAGE, content_type="text/html", headers=page_headers(DOCS_CSP)
    )


@routes.get("/docs/assets/swagger-init.js")
async def docs_init(request: web.Request) -> web.Response:
    return web.Response(text=_SWAGGER_INIT, content_type="application/javascript")


@routes.get("/docs/assets/{name:swagger-ui(-bundle\\.js|\\.css)}")
async def docs_asset(request: web.Request) -> web.FileResponse:
    return web.FileResponse(Path(swagger_ui_path) / request.match_info["name"])

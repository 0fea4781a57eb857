"""The OpenAPI 3.1 document served at /openapi.json, and the page at /docs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from swagger_ui_bundle import swagger_ui_path

from services.gateway.photos import LISTABLE, ListQuery
from services.gateway.uploads import BatchRequest, UploadRequest

routes = web.RouteTableDef()
REF = "#/components/schemas/{model}"
ERRORS = {
    "400": "malformed JSON, a bad cursor, or an API key without X-Darkroom-User",
    "401": "no usable credentials (WWW-Authenticate says why)",
    "403": "the API key lacks the scope",
    "404": "no such photo (or not yours)",
    "405": "method not allowed",
    "413": "request body too large",
    "429": "rate limited (see Retry-After)",
    "503": "a backing service is unavailable (see Retry-After); nothing was granted",
    "500": "the server failed",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _responses(ok: dict[str, Any], *extra: str) -> dict[str, Any]:
    problems = {
        code: {
            "description": ERRORS.get(code, "see the problem's code and detail"),
            "content": {"application/problem+json": {"schema": _ref("Problem")}},
        }
        for code in ["400", "401", "403", "405", "413", "429", "500", "503", *extra]
    }
    return {**ok, **problems}


NULLABLE_STR = {"type": ["string", "null"]}
NULLABLE_INT = {"type": ["integer", "null"]}
NULLABLE_NUM = {"type": ["number", "null"]}

SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "required": ["type", "title", "status", "detail", "code"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "code": {"type": "string"},
            "errors": {"type": "array", "items": {"type": "object"}},
        },
    },
    "Upload": {
        "type": "object",
        "required": ["method", "url"],
        "properties": {
            "method": {"enum": ["POST", "PUT"]},
            "url": {"type": "string"},
            "fields": {"type": "object", "additionalProperties": {"type": "string"}},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
    "Grant": {
        "oneOf": [
            {
                "type": "object",
                "required": ["photo_id", "upload", "expires_at"],
                "properties": {
                    "photo_id": {"type": "string"},
                    "upload": _ref("Upload"),
                    "expires_at": {"type": "string", "format": "date-time"},
                },
                "additionalProperties": False,
            },
            {
                "type": "object",
                "description": "the owner already has this photo (same sha256)",
                "required": ["photo_id", "duplicate", "photo"],
                "properties": {
                    "photo_id": {"type": "string"},
                    "duplicate": {"const": True},
                    "photo": _ref("Photo"),
                },
                "additionalProperties": False,
            },
        ]
    },
    "Link": {
        "type": "object",
        "required": ["url"],
        "properties": {
            "url": {"type": "string"},
            "width": {"type": "integer"},
            "height": {"type": "integer"},
            "content_type": {"type": "string"},
        },
    },
    "Photo": {
        "type": "object",
        "required": ["id", "status", "filename", "created_at", "renditions", "original"],
        "properties": {
            "id": {"type": "string"},
            "status": {"enum": [*LISTABLE]},
            "reason": NULLABLE_STR,
            "reason_detail": NULLABLE_STR,
            "filename": {"type": "string"},
            "content_type": {"type": "string"},
            "size": {"type": "integer"},
            "width": NULLABLE_INT,
            "height": NULLABLE_INT,
            "taken_at": {"type": ["string", "null"], "format": "date-time"},
            "taken_at_local": NULLABLE_STR,
            "placeholder": {**NULLABLE_STR, "description": "ThumbHash, base64"},
            "sha256": NULLABLE_STR,
            "camera": {
                "type": "object",
                "properties": {"make": NULLABLE_STR, "model": NULLABLE_STR, "lens": NULLABLE_STR},
            },
            "exposure": {
                "type": "object",
                "properties": {
                    "exposure_time": NULLABLE_NUM,
                    "f_number": NULLABLE_NUM,
                    "iso": NULLABLE_INT,
                    "focal_length": NULLABLE_NUM,
                },
            },
            "location": {
                "oneOf": [
                    {
                        "type": "object",
                        "required": ["latitude", "longitude"],
                        "properties": {
                            "latitude": {"type": "number"},
                            "longitude": {"type": "number"},
                        },
                    },
                    {"type": "null"},
                ]
            },
            "created_at": {"type": "string", "format": "date-time"},
            "renditions": {"type": "object", "additionalProperties": _ref("Link")},
            "original": {"oneOf": [_ref("Link"), {"type": "null"}]},
        },
    },
    "PhotoPage": {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {
            "items": {"type": "array", "items": _ref("Photo")},
            "next_cursor": NULLABLE_STR,
        },
    },
    "Completion": {
        "type": "object",
        "required": ["id", "status"],
        "properties": {"id": {"type": "string"}, "status": {"enum": [*LISTABLE]}},
    },
}

PHOTO_ID = {"name": "photo_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _schemas(*models: type[BaseModel]) -> dict[str, Any]:
    schemas = dict(SCHEMAS)
    for model in models:
        schema = model.model_json_schema(ref_template=REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas


def _body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


def _query_parameters() -> list[dict[str, Any]]:
    schema = ListQuery.model_json_schema()
    return [
        {"name": name, "in": "query", "required": False, "schema": prop}
        for name, prop in schema["properties"].items()
    ]


def _paths() -> dict[str, Any]:
    auth: list[dict[str, list[str]]] = [{"bearer": []}]
    return {
        "/v1/uploads": {
            "post": {
                "summary": "Grant one upload (or answer the existing photo with that sha256)",
                "security": auth,
                "requestBody": _body("UploadRequest"),
                "responses": _responses(
                    {
                        "201": _json(_ref("Grant"), "granted"),
                        "200": _json(_ref("Grant"), "already uploaded"),
                    },
                    "409",
                    "415",
                    "422",
                ),
            }
        },
        "/v1/uploads:batch": {
            "post": {
                "summary": "Grant up to 50 uploads, all or none, in request order",
                "security": auth,
                "requestBody": _body("BatchRequest"),
                "responses": _responses(
                    {
                        "201": _json(
                            {
                                "type": "object",
                                "required": ["items"],
                                "properties": {"items": {"type": "array", "items": _ref("Grant")}},
                            },
                            "every item granted",
                        )
                    },
                    "409",
                    "422",
                ),
            }
        },
        "/v1/uploads/{photo_id}/complete": {
            "post": {
                "summary": "Hint that the upload finished (verification starts now)",
                "security": auth,
                "parameters": [PHOTO_ID],
                "responses": _responses(
                    {
                        "202": _json(_ref("Completion"), "verification requested"),
                        "200": _json(_ref("Completion"), "already past pending"),
                    },
                    "404",
                ),
            }
        },
        "/v1/photos": {
            "get": {
                "summary": "The caller's photos, newest first",
                "security": auth,
                "parameters": _query_parameters(),
                "responses": _responses({"200": _json(_ref("PhotoPage"), "a page")}, "422"),
            }
        },
        "/v1/photos/{photo_id}": {
            "get": {
                "summary": "One photo, with download URLs once ready",
                "security": auth,
                "parameters": [PHOTO_ID],
                "responses": _responses({"200": _json(_ref("Photo"), "the photo")}, "404"),
            },
            "delete": {
                "summary": "Delete a photo: gone at once, purged from storage soon after",
                "security": auth,
                "parameters": [PHOTO_ID],
                "responses": _responses({"204": {"description": "deleted"}}, "404"),
            },
        },
        "/v1/photos/{photo_id}/{rendition}": {
            "get": {
                "summary": "Stable link: 302 to the current download URL",
                "security": auth,
                "parameters": [
                    PHOTO_ID,
                    {
                        "name": "rendition",
                        "in": "path",
                        "required": True,
                        "description": "`original` or a rendition name such as `thumb`",
                        "schema": {"type": "string"},
                    },
                ],
                "responses": _responses(
                    {"302": {"description": "redirect to the presigned URL"}}, "404", "409"
                ),
            }
        },
        "/v1/me": {
            "delete": {
                "summary": "Delete the caller's account and every photo in it",
                "security": auth,
                "responses": _responses(
                    {
                        "202": _json(
                            {
                                "type": "object",
                                "required": ["status", "photos"],
                                "properties": {
                                    "status": {"const": "deleting"},
                                    "photos": {"type": "integer"},
                                },
                            },
                            "purge under way",
                        )
                    }
                ),
            }
        },
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "up"}}}},
        "/readyz": {
            "get": {
                "summary": "Readiness (the database; the broker is reported, not required)",
                "responses": {
                    "200": {"description": "ready"},
                    "503": {"description": "not ready"},
                },
            }
        },
    }


def build_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Darkroom",
            "version": "1",
            "description": "Photo uploads through presigned URLs. Errors are RFC 9457 "
            "problem details. Authenticate with a bearer JWT, or an API key "
            "(`Bearer drk_...`) plus `X-Darkroom-User`.",
        },
        "paths": _paths(),
        "components": {
            "schemas": _schemas(UploadRequest, BatchRequest),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(build_document())


# Swagger UI's own files come from the swagger-ui-bundle-v2 package (no CDN needed).
_SWAGGER_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Darkroom API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/assets/swagger-init.js"></script>
</body></html>"""

_SWAGGER_INIT = (
    "window.ui = SwaggerUIBundle({url: '/openapi.json', dom_id: '#ui', deepLinking: true});"
)


@routes.get("/docs")
async def docs(request: web.Request) -> web.Response:
    return web.Response(text=_SWAGGER_PAGE, content_type="text/html")


@routes.get("/docs/assets/swagger-init.js")
async def docs_init(request: web.Request) -> web.Response:
    return web.Response(text=_SWAGGER_INIT, content_type="application/javascript")


@routes.get("/docs/assets/{name:swagger-ui(-bundle\\.js|\\.css)}")
async def docs_asset(request: web.Request) -> web.FileResponse:
    return web.FileResponse(Path(swagger_ui_path) / request.match_info["name"])

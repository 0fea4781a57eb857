"""Reading requests: trace ids, JSON bodies, query strings, validation problems."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from services.gateway.problems import INVALID, MALFORMED_JSON, ApiError
from shared.text import visible_text

M = TypeVar("M", bound=BaseModel)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,128}$")


def trace_id_of(request: web.Request) -> str:
    given = request.headers.get("X-Request-ID", "")
    return given if _REQUEST_ID.match(given) else uuid.uuid4().hex


async def json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    # JSONDecodeError and UnicodeDecodeError (ValueError), an unknown charset (LookupError),
    # absurd nesting (RecursionError): all just bad bodies.
    except (ValueError, LookupError, RecursionError) as exc:
        raise MALFORMED_JSON(f"request body is not JSON: {exc!r}"[:300]) from exc


async def parsed_body(request: web.Request, model: type[M]) -> M:
    try:
        return model.model_validate(await json_body(request))
    except ValidationError as exc:
        raise validation_problem(exc) from exc


def parsed_query(query: Mapping[str, str], model: type[M]) -> M:
    try:
        return model.model_validate(dict(query))
    except ValidationError as exc:
        raise validation_problem(exc, what="query string") from exc


def display_name(filename: str) -> str:
    """The client's file name for display only: no path, nothing invisible (controls,
    bidi overrides, line separators: see shared.text)."""
    name = visible_text(filename.replace("\\", "/").rsplit("/", 1)[-1]).strip()
    return name[:255] or "photo"


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]}
        for e in exc.errors()
    ]


def validation_problem(exc: ValidationError, *, what: str = "request body") -> ApiError:
    return INVALID(f"the {what} is not valid", errors=field_errors(exc))

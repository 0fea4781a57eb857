"""The route table: each operation once, with what it takes and answers.

The same entries register the aiohttp routes and produce the OpenAPI document, so a
route cannot be served undescribed, nor described with shapes it does not use.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web
from pydantic import BaseModel

from services.gateway.problems import EVERY_CALL, Fault, Handler
from shared.events import Event

PHOTO_ID_OF_GRANT = "$response.body#/photo_id"
ALBUM_ID_OF_VIEW = "$response.body#/id"


@dataclass(frozen=True)
class Answer:
    description: str
    model: type[BaseModel] | None = None
    # A runtime expression for a photo id in this answer: the document links it to
    # the operations on that photo, so clients (and stateful testing) can follow it.
    photo_id: str | None = None
    album_id: str | None = None  # the same, for an album id
    # More parameters by name -> runtime expression (e.g. a new link's id with the path's
    # album id): linked to every operation whose parameters they all supply.
    ids: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)  # name -> description
    # A `text/event-stream` answer instead of JSON: what it says, and the events it
    # carries (their payloads are described as the webhooks' are).
    stream: str = ""
    events: tuple[type[Event], ...] = ()


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    operation_id: str
    summary: str
    tag: str
    answers: Mapping[int, Answer]
    handler: Handler | None = None  # None: served by shared.health, described here
    scope: str | None = None  # None: public
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    params: type[BaseModel] | None = None  # the path's parameters
    faults: tuple[Fault, ...] = ()
    description: str = ""
    headers: type[BaseModel] | None = None  # request headers it reads (by alias)
    body_required: bool = True  # False: the body may be left out (an older call's shape)

    @property
    def all_faults(self) -> tuple[Fault, ...]:
        return (*EVERY_CALL, *self.faults) if self.scope else self.faults


class Routes:
    """Operations of one module; `route` is a decorator like aiohttp's RouteTableDef."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.operations: list[Operation] = []

    def route(
        self,
        method: str,
        path: str,
        operation_id: str,
        summary: str,
        answers: Mapping[int, Answer],
        *,
        scope: str | None,
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        params: type[BaseModel] | None = None,
        faults: tuple[Fault, ...] = (),
        headers: type[BaseModel] | None = None,
        body_required: bool = True,
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.operations.append(
                Operation(
                    method,
                    path,
                    operation_id,
                    summary,
                    self.tag,
                    answers,
                    handler,
                    scope,
                    body,
                    query,
                    params,
                    faults,
                    inspect.cleandoc(handler.__doc__ or ""),
                    headers,
                    body_required,
                )
            )
            return handler

        return register


def route_defs(operations: list[Operation]) -> list[web.RouteDef]:
    return [
        web.route(op.method, op.path, op.handler) for op in operations if op.handler is not None
    ]

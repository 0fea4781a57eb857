"""The OpenAPI 3.1 document, generated from the route table and the models it names.

Schemas come from pydantic (JSON Schema 2020-12, which OpenAPI 3.1 uses as it is);
this module only arranges them: parameters, bodies, answers, problems, links between
operations, and the webhooks Darkroom sends.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from services.gateway.live import StreamReset
from services.gateway.models import Problem, UploadRequest
from services.gateway.problems import PROBLEM_JSON, Fault
from services.gateway.registry import Answer, Operation
from shared.events import (
    USER_EVENTS,
    Event,
    WebhookTest,
)
from shared.settings import Settings

REF = "#/components/schemas/{model}"
JSON = "application/json"
EVENT_STREAM = "text/event-stream"
# Events a webhook receiver gets, in the payload the notifier sends.
WEBHOOK_EVENTS: tuple[type[Event], ...] = (*USER_EVENTS, WebhookTest)
WEBHOOK_HEADERS = {
    "webhook-id": "the event id: the same on every retry and re-publish, so dedupe on it",
    "webhook-timestamp": "unix seconds of this attempt",
    "webhook-signature": 'v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">; during a '
    "secret's rotation one such signature per secret, space-separated",
}
DESCRIPTION = (
    "Photo uploads through presigned URLs. Errors are RFC 9457 problem details with a "
    "machine-readable `code`. Authenticate with a bearer JWT, or an API key "
    "(`Bearer drk_...`) plus `X-Darkroom-User`."
)

Schemas = dict[str, Any]


def webhook_payload(event: type[Event]) -> type[BaseModel]:
    """The body the notifier POSTs for `event`: its type, when it was sent, its data."""
    payload: type[BaseModel] = create_model(
        f"{event.__name__}Webhook",
        __config__=ConfigDict(json_schema_serialization_defaults_required=True),
        __doc__=f"Sent when a `{event.TYPE}` event is published.",
        type=(Literal[event.TYPE], event.TYPE),  # type: ignore[arg-type]
        timestamp=(
            datetime,
            Field(description="when the event was handed to endpoints; the same every attempt"),
        ),
        data=(event, ...),
    )
    return payload


class _Components:
    """Every model the document names, generated together so they share definitions."""

    def __init__(
        self,
        operations: Sequence[Operation],
        payloads: Mapping[str, type[BaseModel]],
        extra: Iterable[type[BaseModel]] = (),
    ):
        self.payloads = payloads  # each event's webhook / stream payload, by type
        wanted: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {
            (Problem, "serialization"): None
        }
        for op in operations:
            for model in (op.params, op.query, op.body, op.headers):
                if model is not None:
                    wanted[(model, "validation")] = None
            for answer in op.answers.values():
                if answer.model is not None:
                    wanted[(answer.model, "serialization")] = None
        wanted |= dict.fromkeys((m, "serialization") for m in (*payloads.values(), *extra))
        self.refs, top = models_json_schema(list(wanted), ref_template=REF)
        self.schemas: Schemas = top.get("$defs", {})

    def ref(self, model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, str]:
        return self.refs[(model, mode)]

    def schema(self, model: type[BaseModel], mode: JsonSchemaMode) -> Schemas:
        name = self.ref(model, mode)["$ref"].rsplit("/", 1)[-1]
        schema: Schemas = self.schemas[name]
        return schema


def build_document(operations: Sequence[Operation], settings: Settings) -> dict[str, Any]:
    streamed = [e for op in operations for answer in op.answers.values() for e in answer.events]
    # One payload model per event, shared by the webhooks and the event stream.
    payloads = {event.TYPE: webhook_payload(event) for event in (*WEBHOOK_EVENTS, *streamed)}
    hooks = {event.TYPE: payloads[event.TYPE] for event in WEBHOOK_EVENTS}
    parts = _Components(operations, payloads, [StreamReset] if streamed else [])
    # The size limits are settings, so the document states this deployment's: the larger
    # one, for an upload in parts (a single request's is in the description).
    upload = parts.schema(UploadRequest, "validation")
    size = upload["properties"]["size"]
    size["maximum"] = max(settings.max_upload_bytes, settings.max_multipart_bytes)
    size["description"] += f"; at most {settings.max_upload_bytes} in one request, larger in parts"
    paths: dict[str, dict[str, Any]] = defaultdict(dict)
    for op in operations:
        paths[op.path][op.method.lower()] = _operation(op, operations, parts)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Darkroom", "version": "1", "description": DESCRIPTION},
        "tags": [{"name": tag} for tag in dict.fromkeys(op.tag for op in operations)],
        "paths": dict(paths),
        "webhooks": {kind: _webhook(kind, model, parts) for kind, model in hooks.items()},
        "components": {
            "schemas": parts.schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _operation(op: Operation, every: Sequence[Operation], parts: _Components) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
        "security": [{"bearer": []}] if op.scope else [],
    }
    description = [op.description] if op.description else []
    if op.scope:
        description.append(f"Needs the `{op.scope}` scope when called with an API key.")
    if description:
        doc["description"] = "\n\n".join(description)
    parameters = [
        *_parameters(op.params, "path", parts),
        *_parameters(op.query, "query", parts),
        *_parameters(op.headers, "header", parts),
    ]
    if parameters:
        doc["parameters"] = parameters
    if op.body is not None:
        body = {JSON: {"schema": parts.ref(op.body, "validation")}}
        doc["requestBody"] = {"required": op.body_required, "content": body}
    answers = {str(s): _answer(a, every, parts) for s, a in sorted(op.answers.items())}
    doc["responses"] = answers | _problems(op.all_faults, parts)
    return doc


def _parameters(model: type[BaseModel] | None, where: str, parts: _Components) -> list[Schemas]:
    if model is None:
        return []
    schema = parts.schema(model, "validation")
    required = set(schema.get("required", ()))
    return [
        {
            "name": name,
            "in": where,
            "required": name in required,
            **({"description": prop["description"]} if "description" in prop else {}),
            "schema": prop,
        }
        for name, prop in schema["properties"].items()
    ]


def _answer(answer: Answer, every: Sequence[Operation], parts: _Components) -> Schemas:
    doc: Schemas = {"description": answer.description}
    if answer.model is not None:
        doc["content"] = {JSON: {"schema": parts.ref(answer.model, "serialization")}}
    if answer.stream:
        doc["content"] = {EVENT_STREAM: _stream(answer, parts)}
    if answer.headers:
        doc["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in answer.headers.items()
        }
    ids = {"photo_id": answer.photo_id, "album_id": answer.album_id} | dict(answer.ids)
    supplied = {name: expression for name, expression in ids.items() if expression}
    # Every operation whose parameters the answer supplies can follow it.
    links = {
        op.operation_id: {
            "operationId": op.operation_id,
            "parameters": {n: supplied[n] for n in op.params.model_fields if n in supplied},
        }
        for op in every
        if op.params is not None and _supplied(op.params, supplied)
    }
    if links:
        doc["links"] = links
    return doc


def _stream(answer: Answer, parts: _Components) -> Schemas:
    """OpenAPI 3.1 cannot type the messages of a stream: each message's `data` schema,
    by its `event:` name, goes in `x-events` (a reset's too)."""
    events = {e.TYPE: parts.ref(parts.payloads[e.TYPE], "serialization") for e in answer.events}
    events["reset"] = parts.ref(StreamReset, "serialization")
    return {"schema": {"type": "string", "description": answer.stream}, "x-events": events}


def _supplied(params: type[BaseModel], supplied: Mapping[str, str]) -> bool:
    # The download route also names a rendition: a free string, so a link may lead on.
    needed = set(params.model_fields) - {"rendition"}
    return bool(needed) and needed <= set(supplied)


def _problems(faults: Iterable[Fault], parts: _Components) -> Schemas:
    by_status: dict[int, list[Fault]] = defaultdict(list)
    for fault in faults:
        by_status[fault.status].append(fault)
    problem = parts.ref(Problem, "serialization")
    return {
        str(status): {
            "description": "; ".join(f"`{f.code}`: {f.meaning}" for f in found),
            "content": {
                PROBLEM_JSON: {
                    "schema": {
                        "allOf": [problem],
                        "properties": {
                            "code": {"enum": list(dict.fromkeys(f.code for f in found))}
                        },
                    }
                }
            },
        }
        for status, found in sorted(by_status.items())
    }


def _webhook(kind: str, payload: type[BaseModel], parts: _Components) -> Schemas:
    return {
        "post": {
            "operationId": "on" + "".join(w.capitalize() for w in kind.split(".")),
            "summary": f"Darkroom sends `{kind}` to DARKROOM_WEBHOOK_URL",
            "description": "Signed per the Standard Webhooks spec; an answer other than "
            "2xx is retried with backoff.",
            "tags": ["webhooks"],
            "parameters": [
                {
                    "name": name,
                    "in": "header",
                    "required": True,
                    "description": text,
                    "schema": {"type": "string"},
                }
                for name, text in WEBHOOK_HEADERS.items()
            ],
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": parts.ref(payload, "serialization")}},
            },
            "responses": {"2XX": {"description": "received"}},
        }
    }

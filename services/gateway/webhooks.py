"""Webhook endpoints: each user registers their own, sees their delivery log, and can
send a test event or a failed delivery again. Another user's endpoint is 404, as if it
did not exist."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from aiohttp import web

from services.gateway.album_models import PageQuery
from services.gateway.albums import PAGED, page_query
from services.gateway.context import RESOURCES, TRACE_ID
from services.gateway.inputs import parsed_body
from services.gateway.models import respond
from services.gateway.photos import decode_cursor, encode_cursor
from services.gateway.problems import (
    INVALID,
    MALFORMED_JSON,
    NOT_FOUND,
    TOO_MANY_WEBHOOKS,
    UNSAFE_TARGET,
)
from services.gateway.registry import Answer, Routes
from services.gateway.security import authenticate
from services.gateway.webhook_models import (
    Delivery,
    DeliveryAttempt,
    DeliveryPage,
    DeliveryPath,
    DeliveryQueued,
    NewWebhook,
    RotatedSecret,
    Webhook,
    WebhookPage,
    WebhookPath,
    WebhookRequest,
)
from shared.events import WebhookTest
from shared.logging import get_logger
from shared.secrets import webhook_secret
from shared.targets import TargetRefused, check_resolves, check_url
from shared.webhook_deliveries import AttemptRecord, DeliveryRecord, Planned, webhook_body
from shared.webhooks import WebhookRecord

log = get_logger(__name__)
api = Routes("webhooks")
MAX_ENDPOINTS = 20  # per user
WEBHOOK_IDS = {"webhook_id": "$response.body#/id"}
THEIRS = (NOT_FOUND,)


def webhook_view(hook: WebhookRecord) -> Webhook:
    until = hook.previous_until
    return Webhook(
        id=hook.id,
        url=hook.url,
        events=list(hook.events),
        description=hook.description,
        created_at=hook.created_at,
        failing_since=hook.failing_since,
        disabled_at=hook.disabled_at,
        previous_secret_until=until if until and until > datetime.now(UTC) else None,
    )


def _delivery_view(row: DeliveryRecord, attempts: list[AttemptRecord]) -> Delivery:
    return Delivery(
        id=row.id,
        event_id=row.event_id,
        event_type=row.event_type,
        status=row.status.value,
        attempts=[
            DeliveryAttempt(
                attempt=a.number,
                response_status=a.response_status,
                duration_ms=a.duration_ms,
                error=a.error,
                response_excerpt=a.response_excerpt,
                at=a.at,
            )
            for a in attempts
        ],
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def _own(request: web.Request, user: str) -> WebhookRecord:
    hook = await request.app[RESOURCES].webhooks.get(request.match_info["webhook_id"], user)
    if hook is None:
        raise NOT_FOUND("no such webhook")
    return hook


@api.route(
    "POST",
    "/v1/webhooks",
    "createWebhook",
    "Register an endpoint for the caller's events",
    {201: Answer("the endpoint; its secret is shown this once", NewWebhook, ids=WEBHOOK_IDS)},
    scope="photos:write",
    body=WebhookRequest,
    faults=(MALFORMED_JSON, INVALID, UNSAFE_TARGET, TOO_MANY_WEBHOOKS),
)
async def create_webhook(request: web.Request) -> web.Response:
    """Deliveries are signed per Standard Webhooks with the secret answered here. The URL
    must be https and resolve to public addresses only (checked again at each delivery)."""
    user = (await authenticate(request, "photos:write")).user_id
    body = await parsed_body(request, WebhookRequest)
    res = request.app[RESOURCES]
    allow_private = res.settings.webhook_allow_private_targets
    try:
        await check_resolves(
            check_url(body.url, allow_private=allow_private), allow_private=allow_private
        )
    except TargetRefused as exc:
        raise UNSAFE_TARGET(f"url: {exc}") from exc
    if await res.webhooks.count(user) >= MAX_ENDPOINTS:
        raise TOO_MANY_WEBHOOKS(f"at most {MAX_ENDPOINTS} endpoints per user")
    secret = webhook_secret()
    hook = WebhookRecord(
        id=uuid.uuid4().hex,
        user_id=user,
        url=body.url,
        description=body.description,
        events=tuple(dict.fromkeys(body.events)),
        secret=res.webhooks.seal(secret),
        created_at=datetime.now(UTC),
    )
    await res.webhooks.create(hook)
    log.info("webhook created", webhook_id=hook.id)
    return respond(NewWebhook(**dict(webhook_view(hook)), secret=secret), 201)


@api.route(
    "GET",
    "/v1/webhooks",
    "listWebhooks",
    "The caller's endpoints, newest first",
    {200: Answer("a page (never the secrets)", WebhookPage)},
    scope="photos:read",
    query=PageQuery,
    faults=PAGED,
)
async def list_webhooks(request: web.Request) -> web.Response:
    user = (await authenticate(request, "photos:read")).user_id
    query = page_query(request)
    before = decode_cursor(query.cursor) if query.cursor else None
    found = await request.app[RESOURCES].webhooks.of_user(
        user, limit=query.limit + 1, before=before
    )
    more, found = len(found) > query.limit, found[: query.limit]
    next_cursor = encode_cursor(found[-1]) if more else None
    return respond(WebhookPage(items=[webhook_view(h) for h in found], next_cursor=next_cursor))


@api.route(
    "GET",
    "/v1/webhooks/{webhook_id}",
    "getWebhook",
    "One of the caller's endpoints",
    {200: Answer("the endpoint (never its secret)", Webhook)},
    scope="photos:read",
    params=WebhookPath,
    faults=THEIRS,
)
async def get_webhook(request: web.Request) -> web.Response:
    user = (await authenticate(request, "photos:read")).user_id
    return respond(webhook_view(await _own(request, user)))


@api.route(
    "DELETE",
    "/v1/webhooks/{webhook_id}",
    "deleteWebhook",
    "Remove an endpoint and its delivery log",
    {204: Answer("deleted")},
    scope="photos:write",
    params=WebhookPath,
    faults=THEIRS,
)
async def delete_webhook(request: web.Request) -> web.Response:
    """Deliveries still queued for it are dropped."""
    user = (await authenticate(request, "photos:write")).user_id
    if not await request.app[RESOURCES].webhooks.delete(request.match_info["webhook_id"], user):
        raise NOT_FOUND("no such webhook")
    return web.Response(status=204)


@api.route(
    "POST",
    "/v1/webhooks/{webhook_id}/rotate",
    "rotateWebhookSecret",
    "A new signing secret; the old one signs too for a while",
    {200: Answer("the new secret; shown this once", RotatedSecret)},
    scope="photos:write",
    params=WebhookPath,
    faults=THEIRS,
)
async def rotate_secret(request: web.Request) -> web.Response:
    """Until `previous_secret_until` (24 hours by default) every delivery carries two
    signatures in `webhook-signature`, one per secret, so receivers can switch when
    they are ready."""
    user = (await authenticate(request, "photos:write")).user_id
    res = request.app[RESOURCES]
    secret = webhook_secret()
    overlap = res.settings.webhook_rotation_overlap
    hook = await res.webhooks.rotate(
        request.match_info["webhook_id"], user, secret, overlap_s=overlap
    )
    if hook is None or hook.previous_until is None:
        raise NOT_FOUND("no such webhook")
    log.info("webhook secret rotated", webhook_id=hook.id)
    return respond(RotatedSecret(secret=secret, previous_secret_until=hook.previous_until))


@api.route(
    "POST",
    "/v1/webhooks/{webhook_id}/enable",
    "enableWebhook",
    "Resume deliveries to an endpoint disabled for failing",
    {200: Answer("the endpoint, enabled", Webhook)},
    scope="photos:write",
    params=WebhookPath,
    faults=THEIRS,
)
async def enable_webhook(request: web.Request) -> web.Response:
    """Events from now on are delivered again; those that failed while it was failing stay
    in the delivery log, each can be sent again with its retry route. Enabling an enabled
    endpoint changes nothing."""
    user = (await authenticate(request, "photos:write")).user_id
    hook = await request.app[RESOURCES].webhooks.enable(request.match_info["webhook_id"], user)
    if hook is None:
        raise NOT_FOUND("no such webhook")
    log.info("webhook enabled", webhook_id=hook.id)
    return respond(webhook_view(hook))


@api.route(
    "GET",
    "/v1/webhooks/{webhook_id}/deliveries",
    "listWebhookDeliveries",
    "The endpoint's delivery log, newest first",
    {200: Answer("a page of deliveries, each with its attempts", DeliveryPage)},
    scope="photos:read",
    params=WebhookPath,
    query=PageQuery,
    faults=(*THEIRS, *PAGED),
)
async def list_deliveries(request: web.Request) -> web.Response:
    user = (await authenticate(request, "photos:read")).user_id
    hook = await _own(request, user)
    query = page_query(request)
    before = decode_cursor(query.cursor) if query.cursor else None
    found = await request.app[RESOURCES].deliveries.page(
        hook.id, limit=query.limit + 1, before=before
    )
    more, found = len(found) > query.limit, found[: query.limit]
    next_cursor = encode_cursor(found[-1][0]) if more else None
    items = [_delivery_view(row, attempts) for row, attempts in found]
    return respond(DeliveryPage(items=items, next_cursor=next_cursor))


@api.route(
    "POST",
    "/v1/webhooks/{webhook_id}/test",
    "testWebhook",
    "Send the endpoint a webhook.test event",
    {
        202: Answer(
            "queued; follow it in the delivery log",
            DeliveryQueued,
            ids={
                "webhook_id": "$request.path.webhook_id",
                "delivery_id": "$response.body#/delivery_id",
            },
        )
    },
    scope="photos:write",
    params=WebhookPath,
    faults=THEIRS,
)
async def test_webhook(request: web.Request) -> web.Response:
    """Sent whatever events the endpoint subscribes to, and retried like any delivery."""
    user = (await authenticate(request, "photos:write")).user_id
    hook = await _own(request, user)
    res = request.app[RESOURCES]
    event_id = str(uuid.uuid4())
    event = WebhookTest(webhook_id=hook.id)
    planned = Planned(
        event_id, event.TYPE, webhook_body(event, datetime.now(UTC)), request[TRACE_ID]
    )
    due = await res.deliveries.plan(planned, [hook.id])
    await res.outbox.publish_or_defer(*due)
    queued = DeliveryQueued(delivery_id=due[0].data["delivery_id"], event_id=event_id)
    return respond(queued, 202)


@api.route(
    "POST",
    "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry",
    "retryWebhookDelivery",
    "Send a delivery again, on a fresh retry schedule",
    {202: Answer("queued", DeliveryQueued)},
    scope="photos:write",
    params=DeliveryPath,
    faults=THEIRS,
)
async def retry_delivery(request: web.Request) -> web.Response:
    """With the same event id (webhook-id) and body as before, so receivers that already
    have it can tell."""
    user = (await authenticate(request, "photos:write")).user_id
    hook = await _own(request, user)
    res = request.app[RESOURCES]
    delivery = await res.deliveries.get(request.match_info["delivery_id"], hook.id)
    if delivery is None:
        raise NOT_FOUND("no such delivery")
    envelope = await res.deliveries.retry(delivery.id, hook.id, request[TRACE_ID])
    if envelope is None:
        raise NOT_FOUND("no such delivery")
    await res.outbox.publish_or_defer(envelope)
    return respond(DeliveryQueued(delivery_id=delivery.id, event_id=delivery.event_id), 202)

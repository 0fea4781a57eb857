"""One attempt of one delivery to one endpoint, per `webhook.delivery` message.

Failures raise, and the runtime retries the message on the webhooks queue's own
schedule through the broker's delay queues (DARKROOM_WEBHOOK_RETRY_SCHEDULE); after the
last attempt the delivery is recorded failed and the message is parked, for
`darkroom dlq replay webhooks` or the user's retry route. Each attempt has a bounded
time, and deliveries run concurrently (the queue's own prefetch), so a hanging endpoint
holds only its own deliveries.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
from yarl import URL

from services.notifier.webhooks import DeliveryFailed, deliver, secret_key
from shared.events import WebhookDelivery
from shared.logging import get_logger
from shared.resources import Resources
from shared.runtime import Meta
from shared.settings import Settings
from shared.targets import GuardedResolver, TargetRefused, check_literal
from shared.webhook_deliveries import OPERATOR, AttemptRecord, DeliveryRecord, DeliveryStatus

log = get_logger(__name__)


@dataclass(frozen=True)
class Sessions:
    """The operator's endpoint may be anywhere; users' only on public addresses."""

    operator: aiohttp.ClientSession
    users: aiohttp.ClientSession


@asynccontextmanager
async def open_sessions(settings: Settings) -> AsyncIterator[Sessions]:
    resolver = None if settings.webhook_allow_private_targets else GuardedResolver()
    connector = aiohttp.TCPConnector(resolver=resolver, limit=settings.webhook_concurrency)
    async with (
        aiohttp.ClientSession() as operator,
        aiohttp.ClientSession(connector=connector) as users,
    ):
        yield Sessions(operator, users)


@dataclass(frozen=True)
class Target:
    url: str
    keys: list[bytes]
    session: aiohttp.ClientSession
    guarded: bool


class Deliverer:
    def __init__(self, res: Resources, sessions: Sessions, operator_key: bytes) -> None:
        self.res = res
        self.sessions = sessions
        self.operator_key = operator_key

    async def target(self, webhook_id: str) -> Target | None:
        """Where the delivery goes and the keys that sign it; None if that is no more."""
        settings = self.res.settings
        if webhook_id == OPERATOR:
            if not settings.webhook_url:
                return None
            return Target(settings.webhook_url, [self.operator_key], self.sessions.operator, False)
        hook = await self.res.webhooks.get(webhook_id)
        if hook is None or hook.disabled_at is not None:
            return None
        keys = [secret_key(s) for s in self.res.webhooks.signing_secrets(hook)]
        guarded = not settings.webhook_allow_private_targets
        return Target(hook.url, keys, self.sessions.users, guarded)

    async def on_delivery(self, event: WebhookDelivery, meta: Meta) -> None:
        res = self.res
        delivery = await res.deliveries.get(event.delivery_id)
        if delivery is None or delivery.status is DeliveryStatus.DELIVERED:
            log.info("delivery done or gone; nothing to send", delivery_id=event.delivery_id)
            return
        target = await self.target(delivery.webhook_id)
        if target is None:
            log.info("endpoint deleted or disabled; delivery dropped", delivery_id=delivery.id)
            return
        at, started = datetime.now(UTC), time.perf_counter()
        status, excerpt, error, outcome = await self._attempt(target, delivery)
        res.metrics.webhooks.labels(outcome).inc()
        attempt = AttemptRecord(
            delivery_id=delivery.id,
            number=0,  # numbered by the store
            response_status=status,
            duration_ms=round((time.perf_counter() - started) * 1000),
            error=error,
            response_excerpt=excerpt,
            at=at,
        )
        final = meta.attempt >= res.topology.webhooks.retry.max_attempts
        queued = await res.deliveries.record(
            delivery, attempt, final=final, disable_after_s=res.settings.webhook_disable_after
        )
        if queued:
            log.warning("endpoint disabled after failing too long", webhook_id=delivery.webhook_id)
            await res.outbox.publish_or_defer(*queued)
        if not attempt.succeeded:
            raise DeliveryFailed(error or "not delivered", outcome=outcome)
        log.info("webhook delivered", event_type=delivery.event_type, attempt=meta.attempt)

    async def _attempt(
        self, target: Target, delivery: DeliveryRecord
    ) -> tuple[int | None, str | None, str | None, str]:
        """(response status, body excerpt, error, outcome for the metrics)."""
        try:
            if target.guarded:
                check_literal(URL(target.url))
            answer = await deliver(
                target.session,
                target.url,
                target.keys,
                delivery.event_id,
                delivery.body.encode(),
                timeout=self.res.settings.webhook_timeout,
            )
        except TargetRefused as exc:
            return None, None, f"refused: {exc}", "forbidden"
        except DeliveryFailed as exc:
            return None, None, str(exc)[:500], exc.outcome
        if 200 <= answer.status < 300:
            return answer.status, answer.excerpt, None, "delivered"
        return answer.status, answer.excerpt, f"endpoint answered {answer.status}", "refused"

"""One attempt of one delivery to one endpoint, per `webhook.delivery` message.

Failures raise, and the runtime retries the message on the webhooks queue's own
schedule through the broker's delay queues (DARKROOM_WEBHOOK_RETRY_SCHEDULE); after the
last attempt the delivery is recorded failed and the message is parked, for
`darkroom dlq replay webhooks` or the user's retry route. Each attempt has a bounded
time, and deliveries run concurrently (the queue's own prefetch), so a hanging endpoint
holds only its own deliveries.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
from yarl import URL

from services.notifier.webhooks import DeliveryFailed, deliver, secret_key
from shared.errors import TransientError
from shared.events import WebhookDelivery
from shared.logging import get_logger
from shared.resources import Resources
from shared.runtime import Meta
from shared.settings import Settings
from shared.targets import GuardedResolver, TargetRefused, check_literal
from shared.webhook_deliveries import OPERATOR, AttemptRecord, DeliveryRecord, DeliveryStatus

log = get_logger(__name__)
LEASE_MARGIN_S = 5.0  # beyond the attempt's own timeout
MEMO_LIMIT = 10_000
CLAIM_POLL_S = 0.5


class DeliveryBusy(TransientError):
    """Another attempt of the delivery is in flight: try again later."""


def _outcome(attempt: AttemptRecord) -> str:
    if attempt.response_status is not None:
        return "refused"
    return "forbidden" if (attempt.error or "").startswith("refused:") else "unreachable"


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
        # Attempts made but not yet recorded (the database went away in between).
        self._answered: dict[str, AttemptRecord] = {}

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
        # An attempt answered while the database was away is recorded, not sent again.
        attempt = self._answered.get(delivery.id) or await self._claimed_attempt(target, delivery)
        if attempt is None:
            log.info("delivered meanwhile by another attempt", delivery_id=delivery.id)
            return
        final = meta.attempt >= res.topology.webhooks.retry.max_attempts
        queued = await res.deliveries.record(
            delivery, attempt, final=final, disable_after_s=res.settings.webhook_disable_after
        )
        self._answered.pop(delivery.id, None)
        if queued:
            log.warning("endpoint disabled after failing too long", webhook_id=delivery.webhook_id)
            await res.outbox.publish_or_defer(*queued)
        if not attempt.succeeded:
            raise DeliveryFailed(attempt.error or "not delivered", outcome=_outcome(attempt))
        log.info("webhook delivered", event_type=delivery.event_type, attempt=meta.attempt)

    async def _claimed_attempt(
        self, target: Target, delivery: DeliveryRecord
    ) -> AttemptRecord | None:
        """One attempt, once no other is in flight for this delivery (a copy of the
        message redelivered after a lost broker connection while the first still runs,
        or after a replica died mid-request): None if that other one delivered it."""
        if not await self._claim(delivery.id):
            return None
        at, started = datetime.now(UTC), time.perf_counter()
        status, excerpt, error, outcome = await self._attempt(target, delivery)
        self.res.metrics.webhooks.labels(outcome).inc()
        attempt = AttemptRecord(
            delivery_id=delivery.id,
            number=0,  # numbered by the store
            response_status=status,
            duration_ms=round((time.perf_counter() - started) * 1000),
            error=error,
            response_excerpt=excerpt,
            at=at,
        )
        if len(self._answered) >= MEMO_LIMIT:
            self._answered.clear()
        self._answered[delivery.id] = attempt
        return attempt

    async def _claim(self, delivery_id: str) -> bool:
        """Wait out another attempt's lease (bounded by it): True once ours."""
        deliveries = self.res.deliveries
        lease = self.res.settings.webhook_timeout + LEASE_MARGIN_S
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + lease + LEASE_MARGIN_S
        while not await deliveries.claim(delivery_id, lease_s=lease):
            found = await deliveries.get(delivery_id)
            if found is None or found.status is DeliveryStatus.DELIVERED:
                return False
            if loop.time() >= give_up_at:
                raise DeliveryBusy("another attempt of this delivery holds it")
            await asyncio.sleep(CLAIM_POLL_S)
        return True

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

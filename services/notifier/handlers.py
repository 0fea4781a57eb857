"""Notifier handlers: tell the app about finished photos and album events, mail people
(services/notifier/mail.py), and run the reveal loop."""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp

from services.notifier.mail import Mailer
from services.notifier.reveal import reveal_loop
from services.notifier.webhooks import DeliveryFailed, deliver, payload, secret_key
from shared.errors import ConfigurationError
from shared.events import AlbumDeleted, AlbumMemberAdded, AlbumRevealed, PhotoReady, PhotoRejected
from shared.logging import get_logger
from shared.resources import Resources
from shared.runtime import Meta, Route, on_events
from shared.secrets import webhook_secret_problem
from shared.service import Job

log = get_logger(__name__)
Outcome = PhotoReady | PhotoRejected | AlbumRevealed | AlbumMemberAdded | AlbumDeleted


class Notifier:
    def __init__(self, res: Resources, session: aiohttp.ClientSession) -> None:
        self.res = res
        self.session = session
        self.url = res.settings.webhook_url
        secret = res.settings.webhook_secret.get_secret_value()
        # Settings built from the environment were checked already; copies made in code
        # (dev, tests) were not.
        if self.url and (problem := webhook_secret_problem(secret)):
            raise ConfigurationError(f"DARKROOM_WEBHOOK_SECRET: {problem}")
        self.key = secret_key(secret)
        self.mailer = Mailer(res)

    def jobs(self) -> list[Job]:
        return [lambda stop: reveal_loop(self.res, stop)]

    def routes(self) -> list[Route]:
        return [
            on_events(
                self.res.topology.notifier,
                {
                    PhotoReady: self.on_outcome,
                    PhotoRejected: self.on_outcome,
                    # Until people are notified, the operator's webhook hears of them.
                    AlbumRevealed: self.on_outcome,
                    AlbumMemberAdded: self.on_outcome,
                    AlbumDeleted: self.on_outcome,
                },
            ),
            *self.mailer.routes(),
        ]

    async def on_outcome(self, event: Outcome, meta: Meta) -> None:
        if not self.url:
            log.info("no webhook configured", event_type=event.TYPE)
            return
        body = payload(event.TYPE, datetime.now(UTC).isoformat(), event.model_dump(mode="json"))
        attempts = self.res.metrics.webhooks
        try:
            await deliver(
                self.session,
                self.url,
                self.key,
                meta.event_id,
                body,
                timeout=self.res.settings.webhook_timeout,
            )
        except DeliveryFailed as exc:
            attempts.labels(exc.outcome).inc()
            raise
        attempts.labels("delivered").inc()
        log.info("webhook delivered", event_type=event.TYPE, attempt=meta.attempt)

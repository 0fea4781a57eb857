"""Notifier handlers: tell the app about finished photos."""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp

from services.notifier.webhooks import deliver, payload, secret_key
from shared.errors import ConfigurationError
from shared.events import PhotoReady, PhotoRejected
from shared.logging import get_logger
from shared.resources import Resources
from shared.runtime import Meta, Route, on_events
from shared.secrets import webhook_secret_problem
from shared.service import Job

log = get_logger(__name__)


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

    def jobs(self) -> list[Job]:
        return []

    def routes(self) -> list[Route]:
        return [
            on_events(
                self.res.topology.notifier,
                {PhotoReady: self.on_outcome, PhotoRejected: self.on_outcome},
            )
        ]

    async def on_outcome(self, event: PhotoReady | PhotoRejected, meta: Meta) -> None:
        if not self.url:
            log.info("no webhook configured", event_type=event.TYPE)
            return
        body = payload(event.TYPE, datetime.now(UTC).isoformat(), event.model_dump(mode="json"))
        await deliver(
            self.session,
            self.url,
            self.key,
            meta.event_id,
            body,
            timeout=self.res.settings.webhook_timeout,
        )
        log.info("webhook delivered", event_type=event.TYPE, attempt=meta.attempt)

"""Notifier handlers: fan events out to webhook endpoints, deliver each, mail people
(services/notifier/mail.py), and run the reveal loop."""

from __future__ import annotations

from services.notifier.delivery import Deliverer, Sessions
from services.notifier.fanout import Fanout
from services.notifier.mail import Mailer
from services.notifier.reveal import reveal_loop
from services.notifier.webhooks import secret_key
from shared.errors import ConfigurationError
from shared.events import USER_EVENTS, WebhookDelivery
from shared.logging import get_logger
from shared.resources import Resources
from shared.runtime import Route, on_events
from shared.secrets import webhook_secret_problem
from shared.service import Job

log = get_logger(__name__)


class Notifier:
    def __init__(self, res: Resources, sessions: Sessions) -> None:
        self.res = res
        secret = res.settings.webhook_secret.get_secret_value()
        # Settings built from the environment were checked already; copies made in code
        # (dev, tests) were not.
        if res.settings.webhook_url and (problem := webhook_secret_problem(secret)):
            raise ConfigurationError(f"DARKROOM_WEBHOOK_SECRET: {problem}")
        self.fanout = Fanout(res)
        self.deliverer = Deliverer(res, sessions, secret_key(secret))
        self.mailer = Mailer(res)

    def jobs(self) -> list[Job]:
        return [lambda stop: reveal_loop(self.res, stop)]

    def routes(self) -> list[Route]:
        topology = self.res.topology
        return [
            on_events(topology.notifier, dict.fromkeys(USER_EVENTS, self.fanout.on_event)),
            on_events(topology.webhooks, {WebhookDelivery: self.deliverer.on_delivery}),
            *self.mailer.routes(),
        ]

"""The app's webhook endpoint: verifies Standard Webhooks signatures, records deliveries."""

from __future__ import annotations

import asyncio
import base64
import os
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

LATENCY_S = (0.05, 0.4)


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


@dataclass
class Receiver:
    secret: str
    url: str = ""
    # photo id -> event type -> distinct webhook-ids
    outcomes: dict[str, dict[str, set[str]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(set))
    )
    tally: Counter[str] = field(default_factory=Counter)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        # A real app's endpoint takes its time: the notifier is mid-delivery, killably.
        await asyncio.sleep(random.uniform(*LATENCY_S))
        try:
            payload = Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.tally["bad_signature"] += 1
            return web.Response(status=401)
        self.tally["deliveries"] += 1
        photo_id = str(payload["data"]["photo_id"])
        self.outcomes[photo_id][str(payload["type"])].add(request.headers["webhook-id"])
        return web.Response(status=204)

    def announced(self, photo_id: str) -> dict[str, set[str]]:
        return self.outcomes.get(photo_id, {})


async def serve(receiver: Receiver) -> web.AppRunner:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    receiver.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    return runner

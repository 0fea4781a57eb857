"""The webhook endpoints of a chaos run: the operator's (every event) and one per user
(registered through the API, photo.ready only). Both verify Standard Webhooks
signatures and record what arrived."""

from __future__ import annotations

import asyncio
import base64
import os
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import pairwise

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

from chaos.load import Client

LATENCY_S = (0.05, 0.4)
QUIET_S = 6.0  # after all arrived: time for late repeats to show up


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


@dataclass
class Subscribers:
    """Users' own endpoints, at /user/{name}. A delivery counts as acknowledged when its
    2xx goes back on a connection still open: a notifier killed mid-request never saw
    that answer, and sending again is what it should do. So is sending again after a
    kill between the answer and its record in the database: delivery is at least once,
    and only a lost process may repeat one.

    A repeat is judged from when each delivery arrived, not when it was answered: a
    SIGKILL 3.5 ms before an answer went unnoticed by this loop in a CI run, the
    connection's end not yet read, so the dead caller's delivery counted as answered."""

    base: str = ""
    secrets: dict[str, str] = field(default_factory=dict)  # user -> whsec_ secret
    # (user, webhook-id) -> when each delivery answered 2xx on an open connection arrived
    acks: dict[tuple[str, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    # user -> photo id -> distinct webhook-ids of its photo.ready
    ready: dict[str, dict[str, set[str]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(set))
    )
    tally: Counter[str] = field(default_factory=Counter)

    def url(self, user: str) -> str:
        return f"{self.base}/user/{user}"

    async def handle(self, request: web.Request) -> web.Response:
        arrived = asyncio.get_running_loop().time()
        user = request.match_info["user"]
        body = await request.read()
        await asyncio.sleep(random.uniform(*LATENCY_S))
        try:
            payload = Webhook(self.secrets[user]).verify(body, dict(request.headers))
        except (KeyError, WebhookVerificationError):
            self.tally["bad_signature"] += 1
            return web.Response(status=401)
        msg_id = request.headers["webhook-id"]
        if payload["type"] == "photo.ready":
            self.ready[user][str(payload["data"]["photo_id"])].add(msg_id)
        transport = request.transport
        if transport is not None and not transport.is_closing():
            self.acks[(user, msg_id)].append(arrived)
            self.tally["acknowledged"] += 1
        else:
            self.tally["caller_gone"] += 1
        return web.Response(status=204)

    def check(self, ready_photos: dict[str, str], kills: list[float]) -> tuple[int, int]:
        """(misses, repeats) over ready photos (photo id -> owner): a miss is a photo
        whose owner's endpoint acknowledged no photo.ready for it; a repeat, see
        `repeated`."""
        missed = [p for p, user in ready_photos.items() if not any(self._acked(user, p))]
        return len(missed), len(self.repeated(ready_photos, kills))

    def repeated(self, ready_photos: dict[str, str], kills: list[float]) -> list[str]:
        """Each acknowledged ready photo that arrived under more than one event id, or
        whose event id was acknowledged again with no notifier killed (`kills`, loop
        times) since the earlier delivery arrived, with the deliveries' arrival times."""
        found = []
        for photo_id, user in ready_photos.items():
            acked = self._acked(user, photo_id)
            if any(acked) and (len(acked) > 1 or any(_unexcused(times, kills) for times in acked)):
                found.append(f"{photo_id} of {user}: acknowledged deliveries arrived at {acked}")
        return found

    def _acked(self, user: str, photo_id: str) -> list[list[float]]:
        """When each acknowledged delivery arrived, for every event id the photo's
        photo.ready came under."""
        ids = self.ready.get(user, {}).get(photo_id, set())
        return [self.acks.get((user, i), []) for i in ids]


def _unexcused(acks: list[float], kills: list[float]) -> bool:
    """Whether an acknowledged delivery arrived after the one before it with no kill
    between their arrivals."""
    # Sorted: deliveries that overlapped were recorded in the order they were answered.
    arrivals = sorted(acks)
    return any(
        not any(before < kill < after for kill in kills) for before, after in pairwise(arrivals)
    )


async def subscribe(client: Client, subscribers: Subscribers, users: list[str]) -> None:
    """Every user registers an endpoint of their own for photo.ready, through the API."""
    for user in users:
        subscribers.secrets[user] = await client.register_webhook(user, subscribers.url(user))


async def endpoints_settled(
    subscribers: Subscribers, ready: dict[str, str], timeout_s: float, kills: list[float]
) -> tuple[int, int]:
    """(missed, repeated) once every ready photo (id -> owner) reached its owner's
    endpoint or `timeout_s` passed; then a quiet period, for late repeats to show.
    `kills`: when the notifier was killed (loop times)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if not subscribers.check(ready, kills)[0]:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(QUIET_S)
    return subscribers.check(ready, kills)


async def serve(receiver: Receiver, subscribers: Subscribers) -> web.AppRunner:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    app.router.add_post("/user/{user}", subscribers.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    receiver.url = f"{base}/hook"
    subscribers.base = base
    return runner

"""Running the real services for end-to-end tests, and talking to them like a client."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import aiohttp
from aiohttp import web
from pydantic import SecretStr
from standardwebhooks import Webhook, WebhookVerificationError

from services.gateway.service import serve as gateway
from services.ingest_worker.service import serve as ingest
from services.notifier.service import serve as notifier
from services.thumbnail_worker.service import serve as thumbnails
from shared import secrets
from shared.broker import Broker
from shared.embedded import provision_bucket_with_sqs
from shared.keys import original_key
from shared.metrics import Metrics
from shared.runtime import Route, Worker
from shared.settings import Settings
from shared.store import NewPhoto
from shared.topology import Topology
from tests import s3events

WEBHOOK_SECRET = secrets.webhook_secret()


def intent(photo_id: str, owner: str, size: int, **fields: Any) -> NewPhoto:
    """A JPEG upload intent of `size` bytes under the photo's own key, valid for five
    minutes; `fields` override any of that."""
    values: dict[str, Any] = {
        "id": photo_id,
        "owner_id": owner,
        "object_key": original_key(owner, photo_id),
        "filename": "photo.jpg",
        "declared_type": "image/jpeg",
        "declared_size": size,
        "upload_expires_at": datetime.now(UTC) + timedelta(minutes=5),
        "trace_id": "t",
    }
    return NewPhoto(**(values | fields))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class WebhookReceiver:
    """A real local HTTP endpoint that verifies and collects webhooks."""

    url: str = ""
    fail_first: int = 0  # answer 503 to this many valid deliveries first
    received: list[dict[str, Any]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    attempts: list[tuple[str, int]] = field(default_factory=list)  # (webhook-id, status)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        msg_id = request.headers.get("webhook-id", "")
        try:
            payload: dict[str, Any] = Webhook(WEBHOOK_SECRET).verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.attempts.append((msg_id, 401))
            return web.Response(status=401)
        if self.fail_first:
            self.fail_first -= 1
            self.attempts.append((msg_id, 503))
            return web.Response(status=503)
        self.attempts.append((msg_id, 204))
        async with self._arrived:
            self.received.append(payload)
            self.ids.append(msg_id)
            self._arrived.notify_all()
        return web.Response(status=204)

    def deliveries(self, photo_id: str, event_type: str) -> int:
        return sum(
            1
            for p in self.received
            if p["type"] == event_type and p["data"]["photo_id"] == photo_id
        )

    async def wait_for(
        self, photo_id: str, event_type: str, timeout: float = 60, *, key: str = "photo_id"
    ) -> dict[str, Any]:
        """The first delivery of `event_type` whose data's `key` is `photo_id` (or another
        id named by `key`, such as `album_id`)."""

        def match() -> dict[str, Any] | None:
            for p in self.received:
                if p["type"] == event_type and p["data"].get(key) == photo_id:
                    return p
            return None

        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: match() is not None), timeout)
        found = match()
        assert found is not None
        return found


@asynccontextmanager
async def serve_local(app: web.Application, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Serve `app` on a free loopback port (of `host`: "::1" for IPv6) until the block
    ends; yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port(host)
    await web.TCPSite(runner, host, port).start()
    try:
        yield f"http://{f'[{host}]' if ':' in host else host}:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def webhook_receiver() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    async with serve_local(app) as base:
        receiver.url = f"{base}/hook"
        yield receiver


Service = Callable[[Settings, asyncio.Event], Coroutine[Any, Any, None]]


@asynccontextmanager
async def running(settings: Settings, services: list[Service]) -> AsyncIterator[str]:
    """Run services as concurrent tasks until the block ends; yields the gateway's URL."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(service(settings, stop)) for service in services]
    base = f"http://{settings.gateway_host}:{settings.gateway_port}"
    try:
        await wait_ready(base, tasks)
        yield base
    finally:
        stop.set()
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, f"a service failed: {errors!r}"


async def wait_ready(base: str, tasks: list[asyncio.Task[None]], timeout: float = 30) -> None:
    """Poll /readyz like an orchestrator would, failing fast if a service crashed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with aiohttp.ClientSession() as http:
        while loop.time() < deadline:
            for task in tasks:
                if task.done():
                    task.result()
                    raise AssertionError("a service exited during start-up")
            try:
                async with http.get(f"{base}/readyz") as resp:
                    # All checks, the broker's too: the gateway serves without it, but
                    # tests publish to the topology it declares once connected.
                    if resp.status == 200 and all((await resp.json())["checks"].values()):
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"gateway at {base} not ready within {timeout}s")


ALL_SERVICES: list[Service] = [gateway, ingest, thumbnails, notifier]


class Client:
    """An app's client: asks for a grant, uploads straight to storage, reads photos."""

    def __init__(self, http: aiohttp.ClientSession, base: str, token: str) -> None:
        self.http = http
        self.base = base
        self.headers = {"Authorization": f"Bearer {token}"}

    async def grant(self, data: bytes, content_type: str, **extra: Any) -> dict[str, Any]:
        body = {"filename": "photo.jpg", "content_type": content_type, "size": len(data), **extra}
        async with self.http.post(
            f"{self.base}/v1/uploads", json=body, headers=self.headers
        ) as resp:
            assert resp.status == 201, await resp.text()
            grant: dict[str, Any] = await resp.json()
            return grant

    async def upload(self, grant: dict[str, Any], data: bytes, content_type: str) -> None:
        upload = grant["upload"]
        if upload["method"] == "PUT":
            async with self.http.put(upload["url"], data=data, headers=upload["headers"]) as resp:
                assert resp.status == 200, await resp.text()
            return
        form = aiohttp.FormData(quote_fields=False)
        for name, value in upload["fields"].items():
            form.add_field(name, value)
        form.add_field("file", data, filename="photo.jpg", content_type=content_type)
        async with self.http.post(upload["url"], data=form) as resp:
            assert resp.status in (200, 201, 204), await resp.text()

    async def upload_in_parts(self, grant: dict[str, Any], data: bytes) -> None:
        """Sign every part, PUT each (aiohttp, straight to storage), then complete."""
        photo_id, size = grant["photo_id"], grant["upload"]["part_size"]
        numbers = list(range(1, grant["upload"]["part_count"] + 1))
        uploads = f"{self.base}/v1/uploads/{photo_id}"
        async with self.http.post(
            f"{uploads}/parts", json={"part_numbers": numbers}, headers=self.headers
        ) as resp:
            assert resp.status == 200, await resp.text()
            parts = (await resp.json())["parts"]
        done = []
        for part in parts:
            n = part["part_number"]
            chunk = data[(n - 1) * size : n * size]
            async with self.http.put(part["url"], data=chunk, headers=part["headers"]) as resp:
                assert resp.status == 200, await resp.text()
                done.append({"part_number": n, "etag": resp.headers["ETag"]})
        async with self.http.post(
            f"{uploads}/complete", json={"parts": done}, headers=self.headers
        ) as resp:
            assert resp.status == 202, await resp.text()

    async def photo(self, photo_id: str) -> dict[str, Any]:
        async with self.http.get(f"{self.base}/v1/photos/{photo_id}", headers=self.headers) as resp:
            assert resp.status == 200, await resp.text()
            view: dict[str, Any] = await resp.json()
            return view

    async def download(self, url: str) -> tuple[bytes, str]:
        async with self.http.get(url) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.read(), resp.headers.get("Content-Type", "")


async def with_sqs(settings: Settings, unique: str) -> Settings:
    queue_url = await provision_bucket_with_sqs(settings, f"notify-{unique}")
    return settings.model_copy(update={"sqs_queue_url": queue_url})


async def announce(settings: Settings, fmt: str, key: str, size: int) -> None:
    """Publish a notification the way MinIO or Ceph would: straight to the exchange."""
    body = getattr(s3events, fmt)(settings.s3_bucket, key, size)
    connection = await aio_pika.connect(settings.broker_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(Topology.from_settings(settings).storage_exchange)
        await exchange.publish(
            aio_pika.Message(
                body,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=f"{fmt}.object-created",
        )


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that configures a service process (`python -m services.X`) like
    `settings`: this process's own, minus any DARKROOM_* of the caller's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DARKROOM_")}
    named = {
        "BROKER_URL": settings.broker_url,
        "DATABASE_URL": settings.database_url,
        "S3_ENDPOINT_URL": settings.s3_endpoint_url,
        "S3_ACCESS_KEY_ID": settings.s3_access_key_id,
        "S3_SECRET_ACCESS_KEY": settings.s3_secret_access_key.get_secret_value(),
        "S3_BUCKET": settings.s3_bucket,
        "SQS_QUEUE_URL": settings.sqs_queue_url,
        "SQS_ENDPOINT_URL": settings.sqs_endpoint_url,
        "SQS_WAIT_SECONDS": str(settings.sqs_wait_seconds),
        "TOPOLOGY_PREFIX": settings.topology_prefix,
        "AUTH_JWT_SECRET": settings.auth_jwt_secret.get_secret_value(),
        "WEBHOOK_URL": settings.webhook_url,
        "WEBHOOK_SECRET": settings.webhook_secret.get_secret_value(),
        "RETRY_BASE_MS": str(settings.retry_base_ms),
        "RETRY_CAP_MS": str(settings.retry_cap_ms),
        "RETRY_MAX_ATTEMPTS": str(settings.retry_max_attempts),
        "DELIVERY_LIMIT": str(settings.delivery_limit),
        "LOG_JSON": "true",
    }
    env.update({f"DARKROOM_{name}": value for name, value in named.items()})
    env.update(extra)
    return env


def worker(
    broker: Broker, topology: Topology, route: Route, grace: float = 5.0, **options: Any
) -> Worker:
    """A consumer runtime on one route, as the services build theirs."""
    return Worker(broker, topology, [route], metrics=Metrics(), grace=grace, **options)


def dev_settings(
    data_dir: Any, hooks: WebhookReceiver, unique: str, jwt_secret: str, **overrides: Any
) -> Settings:
    """`darkroom dev` on its embedded parts (or those `overrides` name), with its webhooks
    going to `hooks` and names of its own on a shared broker."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "gateway_port": free_port(),
        "dev_s3_port": 0,
        "dev_smtp_port": 0,
        "auth_jwt_secret": SecretStr(jwt_secret),
        "webhook_url": hooks.url,
        "webhook_secret": SecretStr(WEBHOOK_SECRET),
        "sqs_wait_seconds": 1,
        "log_json": True,
        "health_port": 0,
        "s3_bucket": f"dev-{unique}",
        "topology_prefix": f"dev-{unique}",
    }
    return Settings(**(values | overrides))

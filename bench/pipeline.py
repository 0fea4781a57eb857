"""Benchmark: stored-to-ready throughput of the whole pipeline against raw render().

    python -m bench.pipeline [--photos N] [--threads T]

The services run as processes (`python -m services.<name>`) on real RabbitMQ and
PostgreSQL (a database and a topology of the run's own) with moto's S3 and SQS in this
process; photos are 12 MP JPEGs uploaded through Darkroom's own grants, and a photo is
ready when its `photo.ready` webhook arrives. In the same run, render() alone on the same
photos with the same number of threads gives the baseline. Then the pipeline runs again
with two thumbnail worker processes of T threads each, for the scale-out ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from bench.gateway import AMQP_URL, delete_run_topology, own_database
from bench.photos import encoded, photo
from chaos import fleet
from services.gateway.auth import issue_token
from services.thumbnail_worker.render import DEFAULT_RENDITIONS, render
from shared import secrets
from shared.embedded import moto_server, provision_bucket_with_sqs
from shared.imaging import configure_pillow
from shared.settings import Settings

DISTINCT = 4


class Arrivals:
    """photo.ready webhooks as they arrive: photo id -> monotonic time."""

    def __init__(self) -> None:
        self.ready: dict[str, float] = {}
        self.changed = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        payload = json.loads(await request.read())
        if payload["type"] == "photo.ready":
            self.ready.setdefault(payload["data"]["photo_id"], time.monotonic())
            self.changed.set()
        return web.Response(status=204)

    async def wait_for(self, ids: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ids <= self.ready.keys():
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), max(0.1, deadline - time.monotonic()))


async def main(count: int, threads: int) -> None:
    configure_pillow()
    samples = [encoded(photo(4000, 3000, seed=s), "JPEG") for s in range(DISTINCT)]
    raw = _raw_render_rate(samples, count, threads)
    one = await _pipeline(samples, count, threads, thumbnail_workers=1)
    two = await _pipeline(samples, count, threads, thumbnail_workers=2)
    rate, p50, p99 = one
    print(f"raw render(): {raw:.2f} photos/s with {threads} threads (12 MP JPEG)")
    print(
        f"pipeline: {rate:.2f} photos/s, {rate / raw:.2f} of raw render throughput, "
        f"p50 {p50:.0f} ms, p99 {p99:.0f} ms"
    )
    print(f"scale-out: 2 workers {two[0] / rate:.2f}x of 1 ({threads} threads each)")


def _raw_render_rate(samples: list[bytes], count: int, threads: int) -> float:
    pixels = Settings().max_image_pixels

    def one(data: bytes) -> None:
        render(data, "image/jpeg", DEFAULT_RENDITIONS, max_pixels=pixels)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, samples))  # warm up
        started = time.perf_counter()
        list(pool.map(one, (samples[i % DISTINCT] for i in range(count))))
        return count / (time.perf_counter() - started)


async def _pipeline(
    samples: list[bytes], count: int, threads: int, *, thumbnail_workers: int
) -> tuple[float, float, float]:
    """(photos/s from the first upload stored to the last photo ready, p50 ms, p99 ms)."""
    arrivals = Arrivals()
    async with AsyncExitStack() as stack:
        run = uuid.uuid4().hex[:8]
        s3 = stack.enter_context(moto_server())
        bucket, prefix, jwt = f"bench-{run}", f"bench-{run}", secrets.jwt_secret()
        storage = Settings(
            s3_endpoint_url=s3,
            s3_bucket=bucket,
            s3_access_key_id="bench",
            s3_secret_access_key=SecretStr("bench-secret"),
        )
        queue = await provision_bucket_with_sqs(storage, f"notify-{run}")
        database = await stack.enter_async_context(own_database())
        stack.push_async_callback(delete_run_topology, prefix)
        hook = await _serve(arrivals, stack)
        env = {
            "DARKROOM_BROKER_URL": AMQP_URL,
            "DARKROOM_DATABASE_URL": database,
            "DARKROOM_S3_ENDPOINT_URL": s3,
            "DARKROOM_SQS_ENDPOINT_URL": s3,
            "DARKROOM_SQS_QUEUE_URL": queue,
            "DARKROOM_SQS_WAIT_SECONDS": "1",
            "DARKROOM_S3_BUCKET": bucket,
            "DARKROOM_S3_ACCESS_KEY_ID": "bench",
            "DARKROOM_S3_SECRET_ACCESS_KEY": "bench-secret",
            "DARKROOM_TOPOLOGY_PREFIX": prefix,
            "DARKROOM_AUTH_JWT_SECRET": jwt,
            "DARKROOM_RENDER_CONCURRENCY": str(threads),
            "DARKROOM_MAX_PENDING_UPLOADS": "0",
            "DARKROOM_RATE_LIMIT_USER": "0",
            "DARKROOM_RATE_LIMIT_IP": "0",
            "DARKROOM_WEBHOOK_URL": hook,
            "DARKROOM_WEBHOOK_SECRET": secrets.webhook_secret(),
            "DARKROOM_LOG_LEVEL": "warning",
        }
        logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="darkroom-bench-")))
        services = fleet.make_fleet(env, logs)
        for n in range(1, thumbnail_workers):
            port = fleet.free_port()
            services[f"thumbnail_worker_{n}"] = fleet.ServiceProcess(
                "thumbnail_worker",
                fleet.service_env(env, "thumbnail_worker", port),
                port,
                logs / f"thumbnail_worker_{n}.log",
            )
        stack.push_async_callback(fleet.stop_all, services)
        http = await stack.enter_async_context(aiohttp.ClientSession())
        await fleet.start_all(services, http, Counter())
        gateway = services["gateway"].base_url
        token = issue_token(jwt, "bench", ttl_s=3600)
        stored = await _upload_all(http, gateway, token, samples, count)
        await arrivals.wait_for(set(stored), timeout=60 + count * 5)
    latencies = sorted((arrivals.ready[p] - stored[p]) * 1000 for p in stored)
    span = max(arrivals.ready[p] for p in stored) - min(stored.values())
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return len(stored) / span, statistics.median(latencies), p99


async def _serve(arrivals: Arrivals, stack: AsyncExitStack) -> str:
    app = web.Application()
    app.router.add_post("/hook", arrivals.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    site = web.TCPSite(runner, "127.0.0.1", port := fleet.free_port())
    await site.start()
    return f"http://127.0.0.1:{port}/hook"


async def _upload_all(
    http: aiohttp.ClientSession, gateway: str, token: str, samples: list[bytes], count: int
) -> dict[str, float]:
    """Grant and upload every photo at once; photo id -> when storage had it."""
    headers = {"Authorization": f"Bearer {token}"}
    stored: dict[str, float] = {}

    async def one(n: int) -> None:
        data = samples[n % DISTINCT]
        body = {"filename": f"{n}.jpg", "content_type": "image/jpeg", "size": len(data)}
        async with http.post(f"{gateway}/v1/uploads", json=body, headers=headers) as resp:
            grant = await resp.json()
            assert resp.status == 201, grant
        upload = grant["upload"]
        form = aiohttp.FormData(upload["fields"])
        form.add_field("file", data, filename="photo.jpg", content_type="image/jpeg")
        async with http.post(upload["url"], data=form) as resp:
            assert resp.status < 300, await resp.text()
        stored[grant["photo_id"]] = time.monotonic()

    await asyncio.gather(*(one(n) for n in range(count)))
    return stored


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    asyncio.run(main(args.photos, args.threads))

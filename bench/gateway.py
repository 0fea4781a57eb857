"""Benchmark: upload grants and photo listings against an empty aiohttp handler.

    python -m bench.gateway [--duration S] [--connections N]

Each server runs alone on core 0, the load generator on core 1 (wrk when installed, a
Python generator otherwise; the line says which). The baseline, an aiohttp handler that
answers a JSON POST with 201, is measured in the same run with the same generator, so the
ratios hold on a machine whose absolute speed varies. The gateway runs as its own process
against real RabbitMQ and PostgreSQL (a database of the run's own), with durable intents,
quota bookkeeping and rate limits on (limits high enough never to refuse).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import aiohttp
import asyncpg
from aiohttp import web

from bench.load import Load, Result, Target, generate
from bench.profile import Profile, cpu_seconds
from bench.seed import seed_ready_photos
from services.gateway.auth import issue_token
from shared.rabbitmq import delete_topology
from shared.settings import Settings
from shared.topology import Topology

AMQP_URL = os.environ.get("DARKROOM_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
POSTGRES_URL = os.environ.get(
    "DARKROOM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SECRET = secrets.token_urlsafe(48)  # the gateway refuses secrets that are not random
GRANT = b'{"filename":"party.jpg","content_type":"image/jpeg","size":4200000}'
PAGE = 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="py-spy the gateway during the 64-user run"
    )
    parser.add_argument("--hello", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hello is not None:
        web.run_app(_hello_app(), host="127.0.0.1", port=args.hello, print=None)
        return
    _pin({1})
    asyncio.run(_run(args.duration, args.connections, args.profile))


def _hello_app() -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"hello": "world"}, status=201)

    app = web.Application()
    app.router.add_post("/", hello)
    return app


async def _run(duration: float, connections: int, profile: Path | None) -> None:
    load = Load(duration=duration, connections=connections)
    print(f"load average at start: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")
    hello_before = await _hello(load)
    async with own_database() as database_url:
        env = _gateway_env(
            database_url, gw_port := _free(), prefix := f"bench-{uuid.uuid4().hex[:8]}"
        )
        base = f"http://127.0.0.1:{gw_port}"
        with _server([sys.executable, "-m", "services.gateway"], env) as gateway:
            await _wait_up(f"{base}/readyz")
            many = [issue_token(SECRET, f"user-{n}") for n in range(64)]
            grants = f"{base}/v1/uploads"
            spy = profile and Profile(gateway, profile / "grants.txt", duration)
            wide = await _measured(gateway, load, Target(grants, "POST", GRANT, many))
            one = await _measured(gateway, load, Target(grants, "POST", GRANT, many[:1]))
            await seed_ready_photos(database_url, "lister", PAGE)
            pages = f"{base}/v1/photos?limit={PAGE}&status=ready"
            spy_listing = profile and Profile(gateway, profile / "listing.txt", duration)
            lister = [issue_token(SECRET, "lister")]
            listing = await _measured(gateway, load, Target(pages, "GET", b"", lister))
            held = (("If-None-Match", await _etag_of(pages, lister[0])),)
            polled = await _measured(gateway, load, Target(pages, "GET", b"", lister, held))
        await delete_run_topology(prefix)
    # Other work on the machine moves both: the ratios are taken against the mean of a
    # baseline measured before and one after the gateway runs.
    hello_after = await _hello(load)
    hello = (hello_before.rate + hello_after.rate) / 2
    print(f"generator: {hello_before.generator}, {connections} connections, {duration:g} s per run")
    print(
        f"aiohttp hello: {hello:.0f} req/s ({hello_before.rate:.0f} before the gateway runs, "
        f"{hello_after.rate:.0f} after), p99 {hello_before.p99_ms:.1f} ms"
    )
    print(
        f"gateway: {wide.rate:.0f} grants/s, {wide.rate / hello:.2f} of aiohttp hello, "
        f"p99 {wide.p99_ms:.0f} ms (64 users); 1 user: {one.rate:.0f} grants/s"
    )
    print(
        f"listing: {listing.rate:.0f} pages/s of {PAGE} ready photos, "
        f"{listing.rate / hello:.2f} of aiohttp hello"
    )
    print(
        f"listing, polled with the page's ETag (304): {polled.rate:.0f} pages/s, "
        f"{polled.rate / hello:.2f} of aiohttp hello, {polled.cpu_ms:.2f} ms of CPU a page"
    )
    print(
        f"gateway CPU: {wide.cpu_ms:.2f} ms per grant (64 users), {one.cpu_ms:.2f} (1 user), "
        f"{listing.cpu_ms:.2f} ms per listing page; listing {listing.rate / hello:.4f} of "
        f"hello, p99 {listing.p99_ms:.0f} ms"
    )
    for what, spied in (("64-user grants", spy), ("listing", spy_listing)):
        if spied:
            print(f"gateway top 10 by own time, {what} (py-spy):")
            for name, share in spied.top():
                print(f"  {share:5.1f}%  {name}")
            print(
                "  by package, inclusive: "
                + ", ".join(f"{name} {share:.0f}%" for name, share in spied.packages())
            )
    runs = (("grants 64", wide), ("grants 1", one), ("listing", listing), ("polled", polled))
    for name, run in runs:
        if run.failed:
            print(f"warning: {name}: {run.failed} of {run.requests} answers were not 2xx")


async def _etag_of(url: str, token: str) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, headers={"Authorization": f"Bearer {token}"}) as resp,
    ):
        return resp.headers["ETag"]


async def _hello(load: Load) -> Result:
    with _server([sys.executable, "-m", "bench.gateway", "--hello", str(port := _free())], {}):
        await _wait_up(f"http://127.0.0.1:{port}/", method="POST")
        return await generate(load, Target(f"http://127.0.0.1:{port}/", "POST", GRANT, ["x"]))


@dataclass(frozen=True)
class Measured(Result):
    """A run's figures and the gateway's CPU per answered request (all its threads)."""

    cpu_ms: float = 0.0


async def _measured(pid: int, load: Load, target: Target) -> Measured:
    before = cpu_seconds(pid)
    result = await generate(load, target)
    answered = max(1, result.requests - result.failed)
    cpu_ms = (cpu_seconds(pid) - before) * 1000 / answered
    return Measured(**vars(result), cpu_ms=cpu_ms)


def _gateway_env(database_url: str, port: int, prefix: str) -> dict[str, str]:
    return {
        "DARKROOM_BROKER_URL": AMQP_URL,
        "DARKROOM_DATABASE_URL": database_url,
        "DARKROOM_TOPOLOGY_PREFIX": prefix,
        "DARKROOM_AUTH_JWT_SECRET": SECRET,
        "DARKROOM_GATEWAY_PORT": str(port),
        # Presigning needs no storage round trip; a local endpoint keeps it off the network.
        "DARKROOM_S3_ENDPOINT_URL": "http://127.0.0.1:9",
        "DARKROOM_S3_ACCESS_KEY_ID": "bench",
        "DARKROOM_S3_SECRET_ACCESS_KEY": "bench-secret",
        "DARKROOM_MAX_PENDING_UPLOADS": "100000000",
        "DARKROOM_RATE_LIMIT_USER": "100000000",
        "DARKROOM_RATE_LIMIT_IP": "100000000",
        # Production's level: a grant's info line (the access line) is part of its
        # cost. It goes to a file (_server), as a container's go to a pipe.
        "DARKROOM_LOG_LEVEL": "info",
        "DARKROOM_LOG_JSON": "true",
    }


class own_database:
    """A PostgreSQL database of this run's own, dropped at the end."""

    def __init__(self) -> None:
        self.name = f"darkroom_bench_{uuid.uuid4().hex[:8]}"

    async def __aenter__(self) -> str:
        await self._admin(f'CREATE DATABASE "{self.name}"')
        return POSTGRES_URL.rsplit("/", 1)[0] + f"/{self.name}"

    async def __aexit__(self, *_: object) -> None:
        await self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    async def _admin(self, sql: str) -> None:
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()


@contextmanager
def _server(cmd: list[str], env: dict[str, str]) -> Iterator[int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DARKROOM_")}
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed below, after the process)
    proc = subprocess.Popen(  # noqa: S603
        cmd,
        env=clean | env,
        cwd=Path(__file__).resolve().parent.parent,
        preexec_fn=lambda: _pin({0}),
        stderr=log,
    )
    try:
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


async def _wait_up(url: str, method: str = "GET", timeout: float = 60.0) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(int(timeout / 0.1)):
            try:
                async with http.request(method, url, data=b"{}") as response:
                    if response.status < 300:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up within {timeout:g} s")


async def delete_run_topology(prefix: str) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    try:
        topology = Topology.from_settings(Settings(topology_prefix=prefix))
        await delete_topology(await connection.channel(), topology)
    finally:
        await connection.close()


def _pin(cores: set[int]) -> None:
    available = os.sched_getaffinity(0)
    if len(available) > 1 and cores <= available:
        os.sched_setaffinity(0, cores)


def _free() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


if __name__ == "__main__":
    main()

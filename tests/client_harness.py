"""The whole system in one process (`darkroom dev` on embedded parts over moto) for the
client's tests, and `darkroom-client` run as a real subprocess against it."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from services.dev import run_dev
from services.gateway.auth import issue_token
from shared.settings import Settings
from tests.conftest import JWT_SECRET
from tests.harness import free_port, running, serve_local

CLIENT_SRC = Path(__file__).resolve().parent.parent / "clients" / "python"


@dataclass(frozen=True)
class Stack:
    url: str
    settings: Settings

    def token(self, user: str = "alice") -> str:
        return issue_token(JWT_SECRET, user)


@asynccontextmanager
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    """Gateway, ingest, thumbnails and notifier in this process; uploads are verified at
    the completion hint (moto sends no storage notification)."""
    settings = settings.model_copy(update={"gateway_port": free_port()})
    async with running(settings, [run_dev]) as base:
        yield Stack(base, settings)


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """A clean environment: no DARKROOM_* of the caller's, XDG dirs under `home`, a
    wide terminal so tables are not cut."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DARKROOM_", "XDG_"))}
    paths = [str(CLIENT_SRC), env.get("PYTHONPATH", "")]
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_STATE_HOME=str(home / "state"),
        COLUMNS="400",
        PYTHONPATH=os.pathsep.join(p for p in paths if p),
    )
    env.update(extra)
    return env


async def start_cli(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "darkroom_client",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def run_cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run `darkroom-client ARGS...` to its end: exit code, stdout, stderr."""
    process = await start_cli(env, *args)
    out, err = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def table_rows(output: str) -> dict[str, str]:
    """The final table as {file name: the row's text}."""
    rows: dict[str, str] = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.replace("┃", "│").split("│") if c.strip()]
        if len(cells) >= 2 and cells[1] in ("ready", "rejected", "failed"):
            rows[Path(cells[0]).name] = line
    return rows


HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "expect"}


class PartCountingProxy:
    """A reverse proxy in front of the S3 endpoint that counts the UploadPart PUTs it
    passes to storage. With `hold_from` set, parts of that number and up are held (never
    reach storage) until `release()`, which answers them 503: an upload caught mid-way.
    The first `refuse_forms` form uploads are answered 403, as for a lapsed URL."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.passed: list[int] = []
        self.held = 0
        self.hold_from: int | None = None
        self.refuse_forms = 0
        self.changed = asyncio.Condition()
        self._release = asyncio.Event()
        self._http: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        number = request.query.get("partNumber") if request.method == "PUT" else None
        body = await request.read()
        if request.method == "POST" and not request.query_string and self.refuse_forms:
            self.refuse_forms -= 1
            return web.Response(status=403, text="<Error><Code>AccessDenied</Code></Error>")
        if number is not None and self.hold_from is not None and int(number) >= self.hold_from:
            await self._note(held=1)
            await self._release.wait()
            return web.Response(status=503, text="held by the test proxy")
        assert self._http is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with self._http.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body
        ) as resp:
            data = await resp.read()
            out = {k: v for k, v in resp.headers.items() if k.lower() not in HOP_BY_HOP}
            if number is not None and resp.status == 200:
                await self._note(passed=int(number))
            if request.method == "HEAD":  # no body, but the object's length all the same
                out["Content-Length"] = resp.headers.get("Content-Length", "0")
                return web.Response(status=resp.status, headers=out)
            return web.Response(status=resp.status, body=data, headers=out)

    async def _note(self, *, passed: int | None = None, held: int = 0) -> None:
        async with self.changed:
            if passed is not None:
                self.passed.append(passed)
            self.held += held
            self.changed.notify_all()

    async def wait_until(self, passed: int, held: int) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: len(self.passed) >= passed and self.held >= held)

    def release(self) -> None:
        self.hold_from = None
        self._release.set()

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        async with aiohttp.ClientSession(auto_decompress=False) as http, serve_local(app) as url:
            self._http = http
            try:
                yield url
            finally:
                self.release()

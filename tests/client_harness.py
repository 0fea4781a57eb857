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

from services.dev import run_dev
from services.gateway.auth import issue_token
from shared.settings import Settings
from tests.conftest import JWT_SECRET
from tests.harness import free_port, running

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

"""Each service runs as its own process (`python -m services.<name>`), reports ready, and
drains and exits cleanly on SIGTERM; bad configuration stops it with a reason."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any

import aiohttp
import pytest

from chaos.servers import die_with_parent
from services.dev import redact_url
from shared.settings import Settings
from shared.topology import Topology
from tests.conftest import delete_topology
from tests.harness import free_port
from tests.harness import process_env as service_env

SERVICES = ["gateway", "ingest_worker", "thumbnail_worker", "notifier"]


async def start(module: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        f"services.{module}",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=die_with_parent,
    )


async def wait_ready(url: str, process: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession() as http, asyncio.timeout(30):
        while process.returncode is None:
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"exited with {process.returncode} before becoming ready")


def json_lines(stderr: bytes) -> list[dict[str, Any]]:
    lines = []
    for line in stderr.decode().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


@pytest.mark.processes
@pytest.mark.parametrize("module", SERVICES)
async def test_service_process_becomes_ready_and_drains_on_sigterm(
    module: str, settings: Settings, amqp_url: str, postgres_url: str
) -> None:
    settings = settings.model_copy(update={"broker_url": amqp_url, "database_url": postgres_url})
    port = free_port()
    # The gateway answers the probes on its API port too; its health port is another.
    health = "0" if module == "gateway" else str(port)
    env = service_env(settings, DARKROOM_GATEWAY_PORT=str(port), DARKROOM_HEALTH_PORT=health)
    process = await start(module, env)
    try:
        await wait_ready(f"http://127.0.0.1:{port}/readyz", process)
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await delete_topology(amqp_url, Topology.from_settings(settings))
    assert process.returncode == 0, stderr.decode()[-2000:]
    events = [line["event"] for line in json_lines(stderr)]
    assert ("gateway listening" if module == "gateway" else "consuming") in events


@pytest.mark.processes
async def test_a_service_alone_refuses_the_in_process_broker(settings: Settings) -> None:
    env = service_env(settings, DARKROOM_BROKER_URL="", DARKROOM_DATABASE_URL="")
    process = await start("notifier", env)
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert "needs DARKROOM_BROKER_URL" in stderr.decode()


@pytest.mark.processes
async def test_invalid_settings_stop_the_process_with_every_reason(settings: Settings) -> None:
    env = service_env(settings, DARKROOM_PREFETCH="zero", DARKROOM_GATEWAY_PORT="70000")
    process = await start("gateway", env)
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    text = stderr.decode()
    assert process.returncode == 2
    assert "DARKROOM_PREFETCH" in text and "DARKROOM_GATEWAY_PORT" in text
    assert "Traceback" not in text


def test_printed_urls_hide_passwords() -> None:
    assert redact_url("amqp://user:s3cret@host:5672/") == "amqp://user:***@host:5672/"
    assert redact_url("sqlite+aiosqlite:///x.db") == "sqlite+aiosqlite:///x.db"


@pytest.mark.processes
async def test_a_bad_rendition_setting_stops_the_thumbnail_worker(
    settings: Settings, amqp_url: str, postgres_url: str
) -> None:
    settings = settings.model_copy(update={"broker_url": amqp_url, "database_url": postgres_url})
    env = service_env(settings, DARKROOM_RENDITIONS="thumb:256:gif", DARKROOM_HEALTH_PORT="0")
    process = await start("thumbnail_worker", env)
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert "DARKROOM_RENDITIONS" in stderr.decode()

"""The services, each its own `python -m services.<name>` process, configured only by
DARKROOM_* variables; started, SIGKILLed and restarted by the run."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import aiohttp

from chaos.servers import die_with_parent

WORKERS = ("ingest_worker", "thumbnail_worker", "notifier")
SERVICES = ("gateway", *WORKERS)
READY_TIMEOUT_S = 45.0
STOP_GRACE_S = 10.0
# How long a service that exits at start-up is started again (the broker or the database
# may be restarting, and cut or refused connections come on top).
START_DEADLINE_S = 120.0
START_PAUSE_S = 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def base_environment() -> dict[str, str]:
    """This process's environment without any DARKROOM_* variable of the caller's."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DARKROOM_")}


@dataclass
class ServiceProcess:
    module: str
    env: dict[str, str]
    port: int
    log_path: Path
    process: asyncio.subprocess.Process | None = None
    starts: int = 0
    expected_down: bool = False  # set while the run itself has it down
    kills: list[float] = field(default_factory=list)  # loop times of its SIGKILLs
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        if self._log is None:
            self._log = self.log_path.open("ab")
        self.starts += 1
        now = time.strftime("%H:%M:%S")
        self._log.write(f"--- chaos: start #{self.starts} of {self.module} at {now}\n".encode())
        self._log.flush()
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            f"services.{self.module}",
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            preexec_fn=die_with_parent,
        )

    async def wait_ready(self, http: aiohttp.ClientSession) -> None:
        async with asyncio.timeout(READY_TIMEOUT_S):
            while True:
                if not self.running:
                    raise ServiceExited(f"{self.module} exited while starting")
                try:
                    async with http.get(f"{self.base_url}/readyz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)

    async def kill(self) -> None:
        """SIGKILL: no drain, no goodbye, as an OOM kill or a node loss would do it."""
        if self.process is not None and self.process.returncode is None:
            self.kills.append(asyncio.get_running_loop().time())
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace; closes the log."""
        self.expected_down = True
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), STOP_GRACE_S)
            except TimeoutError:
                await self.kill()
        if self._log is not None:
            self._log.close()
            self._log = None


async def messages_total(
    http: aiohttp.ClientSession, service: ServiceProcess, outcome: str = ""
) -> float:
    """Messages the worker settled, by its /metrics, with any outcome or with `outcome`
    (-1 if it cannot be read)."""
    try:
        async with http.get(f"{service.base_url}/metrics") as resp:
            text = await resp.text()
    except aiohttp.ClientError:
        return -1
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("darkroom_messages_total{") and f'outcome="{outcome}' in line
    )


class ServiceExited(RuntimeError):
    pass


async def ensure_up(
    service: ServiceProcess, http: aiohttp.ClientSession, tally: Counter[str]
) -> None:
    """Start it and wait until ready, restarting it when it dies on the way, as an
    orchestrator would (a service may exit when the broker or the database is away at
    start-up), for up to START_DEADLINE_S."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_DEADLINE_S
    while True:
        await service.start()
        try:
            await service.wait_ready(http)
            return
        except ServiceExited:
            tally[f"startup_exit_{service.module}"] += 1
            if loop.time() >= deadline:
                break
            await asyncio.sleep(START_PAUSE_S)
    raise RuntimeError(
        f"{service.module} would not start in {START_DEADLINE_S:.0f}s; see {service.log_path}"
    )


async def supervise(
    fleet: dict[str, ServiceProcess], http: aiohttp.ClientSession, tally: Counter[str]
) -> None:
    """Restart any service that exits by itself (counted: that is a finding)."""
    while True:
        await asyncio.sleep(0.5)
        for service in fleet.values():
            if service.expected_down or service.running:
                continue
            code = service.process.returncode if service.process else None
            tally[f"unexpected_exit_{service.module}"] += 1
            print(f"chaos: {service.module} exited by itself (code {code})", flush=True)
            service.expected_down = True
            try:
                await ensure_up(service, http, tally)
            finally:
                service.expected_down = False


def service_env(common: dict[str, str], module: str, port: int) -> dict[str, str]:
    # The gateway answers the probes on its API port; its health port (metrics) is any.
    gateway = module == "gateway"
    own = {"DARKROOM_GATEWAY_PORT": str(port)} if gateway else {}
    own["DARKROOM_HEALTH_PORT"] = "0" if gateway else str(port)
    return {**base_environment(), **common, **own}


def make_fleet(common: dict[str, str], log_dir: Path) -> dict[str, ServiceProcess]:
    fleet = {}
    for module in SERVICES:
        port = free_port()
        fleet[module] = ServiceProcess(
            module, service_env(common, module, port), port, log_dir / f"{module}.log"
        )
    return fleet


async def start_all(
    fleet: dict[str, ServiceProcess], http: aiohttp.ClientSession, tally: Counter[str]
) -> None:
    # A TaskGroup: if one will not start, the others stop trying (nothing starts after
    # the caller has moved on to stopping them).
    async with asyncio.TaskGroup() as group:
        for service in fleet.values():
            group.create_task(ensure_up(service, http, tally))


async def stop_all(fleet: dict[str, ServiceProcess]) -> None:
    await asyncio.gather(*(s.stop() for s in fleet.values()), return_exceptions=True)

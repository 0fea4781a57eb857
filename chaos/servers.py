"""A RabbitMQ node and a PostgreSQL cluster of one's own, on free ports in a temporary
directory, that can be stopped, killed and started again on the same data.

The servers this machine runs for everyone (127.0.0.1:5672 and :5432) must stay up, so a
restart is only ever done to one of these. Both come from the locally installed server
binaries; `available()` says which are missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import glob
import os
import pwd
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg

START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0


class ServerFailed(RuntimeError):
    """A server would not start or stop; the message ends with its log."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _first(candidates: list[str | None]) -> str | None:
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def rabbitmq_server() -> str | None:
    # Debian's /usr/sbin/rabbitmq-server is a wrapper that switches to the rabbitmq user
    # and ignores our environment; the script it wraps takes RABBITMQ_* as given.
    return _first(
        [
            os.environ.get("DARKROOM_TEST_RABBITMQ_SERVER"),
            "/usr/lib/rabbitmq/bin/rabbitmq-server",
            shutil.which("rabbitmq-server"),
        ]
    )


def postgres_bindir() -> str | None:
    initdb = _first(
        [
            shutil.which("initdb"),
            *sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True),
        ]
    )
    return str(Path(initdb).parent) if initdb else None


def available() -> list[str]:
    """What is missing to run servers of one's own (empty when nothing is)."""
    missing = []
    if rabbitmq_server() is None:
        missing.append("rabbitmq-server (RabbitMQ's server script)")
    if postgres_bindir() is None:
        missing.append("initdb and postgres (PostgreSQL's server binaries)")
    return missing


async def _accepts(port: int) -> bool:
    """Whether the port takes a TCP connection (probing with AMQP only then keeps the
    client library from logging a refusal every time)."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """For `preexec_fn`: have the kernel SIGKILL the child when the process that started
    it dies, even by SIGKILL or a test runner's hard timeout, so no server or service
    outlives its test or chaos run. Linux only; elsewhere a no-op."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


async def _until_answering(
    process: asyncio.subprocess.Process | None,
    answers: Callable[[], Awaitable[bool]],
    what: str,
    log: Path,
) -> None:
    """Wait until the server answers; fail with its log if it exits or takes too long."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT_S
    while loop.time() < deadline and process is not None and process.returncode is None:
        if await answers():
            return
        await asyncio.sleep(0.2)
    raise ServerFailed(f"{what} did not start:\n{_tail(log)}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class OwnRabbit:
    """One RabbitMQ node; `url` stays the same across restarts, so do its queues."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self._node = f"darkroom-{os.getpid()}-{self.port}@localhost"
        self._process: asyncio.subprocess.Process | None = None
        self._log = root / "rabbitmq.out"
        (root / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )
        (root / "enabled_plugins").write_text("[].\n")
        (root / "rabbitmq-env.conf").write_text("")

    def _env(self) -> dict[str, str]:
        root = str(self.root)
        return {
            **os.environ,
            "HOME": root,  # the Erlang cookie goes here, not into the caller's home
            "RABBITMQ_NODENAME": self._node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(_free_port()),
            "RABBITMQ_CONFIG_FILE": f"{root}/rabbitmq.conf",
            "RABBITMQ_CONF_ENV_FILE": f"{root}/rabbitmq-env.conf",
            "RABBITMQ_ENABLED_PLUGINS_FILE": f"{root}/enabled_plugins",
            "RABBITMQ_MNESIA_BASE": f"{root}/mnesia",
            "RABBITMQ_LOG_BASE": f"{root}/log",
            "RABBITMQ_PID_FILE": f"{root}/rabbitmq.pid",
            # The script then execs the Erlang VM instead of waiting on it as a child, so
            # the VM is our child: SIGTERM reaches it, and it dies with us.
            "RUNNING_UNDER_SYSTEMD": "true",
        }

    async def start(self) -> None:
        script = rabbitmq_server()
        if script is None:
            raise ServerFailed("rabbitmq-server is not installed")
        with self._log.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                script,
                env=self._env(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        await _until_answering(self._process, self._answers, f"RabbitMQ on {self.port}", self._log)

    async def _answers(self) -> bool:
        if not await _accepts(self.port):
            return False
        with contextlib.suppress(OSError, aio_pika.exceptions.AMQPError):
            connection = await aio_pika.connect(self.url, timeout=2)
            await connection.close()
            return True
        return False

    async def stop(self) -> None:
        """SIGTERM: RabbitMQ closes its connections and shuts down cleanly."""
        await self._signal(signal.SIGTERM)

    async def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed that was not already."""
        await self._signal(signal.SIGKILL)

    async def restart(self, *, crash: bool = False, down_s: float = 0.0) -> None:
        await (self.kill() if crash else self.stop())
        await asyncio.sleep(down_s)
        await self.start()

    async def _signal(self, sig: signal.Signals) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.send_signal(sig)
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # helpers such as erl_child_setup


class OwnPostgres:
    """One PostgreSQL cluster with trust auth for `postgres`, fsync off (it is throw-away).
    The postmaster is this process's own child (not daemonised by pg_ctl), so it dies with
    it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._data = root / "data"
        self._log = root / "postgres.log"
        self._process: asyncio.subprocess.Process | None = None
        bindir = postgres_bindir()
        if bindir is None:
            raise ServerFailed("PostgreSQL's initdb and postgres are not installed")
        self._bin = Path(bindir)

    def _owner(self) -> dict[str, Any]:
        # PostgreSQL refuses to run as root; run it as the `postgres` user then.
        return {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}

    async def init(self) -> None:
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        process = await asyncio.create_subprocess_exec(
            str(self._bin / "initdb"), "-D", str(self._data), "-A", "trust", "-U", "postgres",
            "-E", "UTF8", "--no-sync",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            **self._owner(),
        )  # fmt: skip
        output, _ = await process.communicate()
        if process.returncode != 0:
            raise ServerFailed(f"initdb failed:\n{output.decode(errors='replace')}")

    async def start(self) -> None:
        with self._log.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                str(self._bin / "postgres"), "-D", str(self._data), "-p", str(self.port),
                "-k", str(self.root), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=die_with_parent,
                **self._owner(),
            )  # fmt: skip
        await _until_answering(
            self._process, self._answers, f"PostgreSQL on {self.port}", self._log
        )

    async def _answers(self) -> bool:
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            connection = await asyncpg.connect(self.url, timeout=2)
            await connection.close()
            return True
        return False

    async def stop(self, mode: str = "fast") -> None:
        """`fast` (SIGINT) ends every session as a restart does; `immediate` (SIGQUIT) is
        a crash: no checkpoint, recovery at the next start."""
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGQUIT if mode == "immediate" else signal.SIGINT)
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def restart(self, *, crash: bool = False, down_s: float = 0.0) -> None:
        await self.stop("immediate" if crash else "fast")
        await asyncio.sleep(down_s)
        await self.start()


@contextlib.asynccontextmanager
async def own_rabbit() -> AsyncIterator[OwnRabbit]:
    with tempfile.TemporaryDirectory(prefix="darkroom-rabbit-") as root:
        node = OwnRabbit(Path(root))
        try:
            await node.start()
            yield node
        finally:
            await node.stop()


@contextlib.asynccontextmanager
async def own_postgres() -> AsyncIterator[OwnPostgres]:
    with tempfile.TemporaryDirectory(prefix="darkroom-postgres-") as root:
        cluster = OwnPostgres(Path(root))
        await cluster.init()
        await cluster.start()
        try:
            yield cluster
        finally:
            await cluster.stop("immediate")

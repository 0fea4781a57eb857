"""Chromium tests of the browser clients: Darkroom's upload page and the real Uppy.

The npm packages they need (playwright-core, which drives Debian's /usr/bin/chromium and
never downloads a browser; @uppy/core and @uppy/aws-s3; esbuild to bundle Uppy) are
installed at the versions tests/browser_node/package-lock.json pins, by `npm ci` into
tests/browser_node/node_modules (not committed) the first time a test needs them. The
Node scripts there read a JSON config on stdin and print what they saw as JSON; the
screenshots they take land in .artifacts/ (not committed).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from services.gateway.auth import issue_token
from shared.embedded import allow_browsers
from shared.settings import Settings
from tests.conftest import JWT_SECRET, require_tool
from tests.harness import ALL_SERVICES, running, with_sqs

HERE = Path(__file__).parent / "browser_node"
ARTIFACTS = Path(__file__).parent.parent / ".artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@functools.cache
def node() -> str:
    """Node.js, with the pinned packages installed (once)."""
    purpose = "the browser tests drive Chromium from Node.js"
    node, npm = require_tool("node", purpose), require_tool("npm", purpose)
    require_tool(CHROMIUM, "the browser tests need Chromium (apt-get install chromium)")
    if not (HERE / "node_modules").is_dir():
        subprocess.run(  # noqa: S603
            [npm, "ci", "--no-audit", "--no-fund", "--silent"], cwd=HERE, check=True
        )
    return node


async def drive(script: str, config: dict[str, Any], timeout: float = 240) -> dict[str, Any]:
    """Run tests/browser_node/`script` with `config`; what it printed, as a dict."""
    proc = await asyncio.create_subprocess_exec(
        node(),
        str(HERE / script),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=HERE,
        # Times typed into the page are read as UTC, as the tests write them.
        env={**os.environ, "CHROMIUM": CHROMIUM, "TZ": "UTC"},
    )
    out, err = await asyncio.wait_for(proc.communicate(json.dumps(config).encode()), timeout)
    assert proc.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    assert "error" not in result, f"{result['error']}\n" + "\n".join(result["log"][:20])
    return result


def artifact(name: str) -> str:
    ARTIFACTS.mkdir(exist_ok=True)
    return str(ARTIFACTS / name)


@asynccontextmanager
async def stack(settings: Settings, unique: str, *, origins: list[str]) -> AsyncIterator[str]:
    """Every service on `settings`, the bucket announcing uploads over SQS and open to
    browsers on the gateway's origin and `origins`; yields the gateway's URL."""
    settings = await with_sqs(settings, unique)
    base = f"http://{settings.gateway_host}:{settings.gateway_port}"
    await allow_browsers(settings, [base, *origins])
    async with running(settings, ALL_SERVICES) as url:
        yield url


def token(user: str) -> str:
    return issue_token(JWT_SECRET, user)

"""Load generation for the gateway benchmark: wrk when installed, else a Python client.

wrk (one thread, on the core it is given) drives about 20x more requests per second than
an aiohttp client on the same core, so with the Python generator the baseline is bounded
by the generator, not the server, and ratios against it read high.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

_WRK_SCRIPT = """
local tokens = {%(tokens)s}
local body = %(body)s
local extra = {%(extra)s}
local n = 0
request = function()
  n = n + 1
  local headers = {["Authorization"] = "Bearer " .. tokens[(n %% #tokens) + 1]}
  for name, value in pairs(extra) do headers[name] = value end
  if body ~= "" then headers["Content-Type"] = "application/json" end
  return wrk.format("%(method)s", nil, headers, body ~= "" and body or nil)
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %%d %%d %%d %%d\\n", summary.requests, summary.duration,
    latency:percentile(99), summary.errors.status + summary.errors.connect
    + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


@dataclass(frozen=True)
class Load:
    duration: float
    connections: int


@dataclass(frozen=True)
class Target:
    url: str
    method: str
    body: bytes
    tokens: list[str]  # sent round robin, one per request
    headers: tuple[tuple[str, str], ...] = ()  # sent with every request


@dataclass(frozen=True)
class Result:
    generator: str
    requests: int
    failed: int
    seconds: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return (self.requests - self.failed) / self.seconds


async def generate(load: Load, target: Target) -> Result:
    if shutil.which("wrk"):
        return await asyncio.to_thread(_wrk, load, target)
    return await _python(load, target)


def _wrk(load: Load, target: Target) -> Result:
    script = _WRK_SCRIPT % {
        "tokens": ",".join(json.dumps(t) for t in target.tokens),
        "body": json.dumps(target.body.decode()),
        "method": target.method,
        "extra": ",".join(f"[{json.dumps(k)}] = {json.dumps(v)}" for k, v in target.headers),
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "load.lua"
        path.write_text(script)
        cmd = ["wrk", "-t1", f"-c{load.connections}", f"-d{load.duration:g}s", "--timeout", "30s"]
        cmd += ["-s", str(path)]
        done = subprocess.run([*cmd, target.url], capture_output=True, text=True, check=True)  # noqa: S603
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("RESULT "))
    requests, micros, p99_us, failed = (int(x) for x in line.split()[1:])
    return Result("wrk", requests, failed, micros / 1e6, p99_us / 1000)


async def _python(load: Load, target: Target) -> Result:
    latencies: list[float] = []
    failed = 0
    deadline = time.perf_counter() + load.duration
    connector = aiohttp.TCPConnector(limit=load.connections)

    async def one_connection(http: aiohttp.ClientSession, offset: int) -> None:
        nonlocal failed
        n = offset
        while time.perf_counter() < deadline:
            token = target.tokens[n % len(target.tokens)]
            n += load.connections
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            headers.update(target.headers)
            started = time.perf_counter()
            async with http.request(
                target.method, target.url, data=target.body or None, headers=headers
            ) as response:
                await response.read()
                failed += response.status >= 400  # as wrk counts them (a 304 answers)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector) as http:
        await asyncio.gather(*(one_connection(http, i) for i in range(load.connections)))
    seconds = time.perf_counter() - started
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)] * 1000 if latencies else 0.0
    return Result("python (aiohttp client)", len(latencies), failed, seconds, p99)

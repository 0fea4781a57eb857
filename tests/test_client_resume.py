"""`darkroom-client upload` killed mid-way through a multipart upload, then run again:
it carries on from the parts storage holds, sending none of them twice."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from darkroom_client import Client

from shared.settings import Settings
from tests import images
from tests.client_harness import PartCountingProxy, cli_env, run_cli, stack, start_cli, table_rows

pytestmark = [pytest.mark.processes, pytest.mark.timeout(300)]  # runs the CLI as a process


async def test_a_killed_upload_resumes_without_sending_finished_parts_again(
    settings: Settings, s3_endpoint: str, tmp_path: Path
) -> None:
    big = tmp_path / "camera" / "panorama.png"
    big.parent.mkdir()
    big.write_bytes(images.noise_png(4500, 4450))  # 60 MB: 8 parts of 8 MiB
    assert big.stat().st_size > 60_000_000
    proxy = PartCountingProxy(s3_endpoint)
    proxy.hold_from = 4  # parts 1-3 reach storage; the CLI is killed with 4 in flight
    async with (
        proxy.serving() as s3_url,
        stack(settings.model_copy(update={"s3_endpoint_url": s3_url})) as dr,
    ):
        env = cli_env(tmp_path, DARKROOM_URL=dr.url, DARKROOM_TOKEN=dr.token())
        first = await start_cli(env, "upload", str(big), "--no-progress")
        await asyncio.wait_for(proxy.wait_until(passed=3, held=1), 120)
        first.kill()
        assert await first.wait() == -9

        pending = json.loads((tmp_path / "state" / "darkroom" / "pending.json").read_text())
        [entry] = pending["uploads"].values()
        photo_id, part_count = entry["state"]["photo_id"], entry["state"]["part_count"]
        assert part_count == 8
        async with Client(dr.url, dr.token()) as client:
            listing = (await client.transport.api("GET", f"/v1/uploads/{photo_id}/parts")).body
        assert sorted(p["part_number"] for p in listing["parts"]) == [1, 2, 3]

        before = len(proxy.passed)
        proxy.release()
        code, out, err = await run_cli(env, "upload", str(big), "--no-progress")
        assert code == 0, out + err
        row = table_rows(out)["panorama.png"]
        assert "ready" in row and photo_id in row, row
    # The second run sent exactly the parts storage did not hold, each once.
    assert sorted(proxy.passed[before:]) == [4, 5, 6, 7, 8]
    assert sorted(proxy.passed) == list(range(1, 9))

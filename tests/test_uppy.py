"""The real Uppy (@uppy/core and @uppy/aws-s3 from npm) uploads through Darkroom's grant
routes with the adapter docs/clients.md quotes, from an app on its own origin, in
Chromium: a small photo in one PUT and a 30 MB one in parts, both ready in the end."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from PIL import Image

from shared.settings import Settings
from tests import images
from tests.browser import artifact, drive, stack, token
from tests.harness import WebhookReceiver, free_port

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

MiB = 1024 * 1024


async def test_uppy_uploads_a_small_and_a_multipart_photo_that_both_become_ready(
    real: Settings, hooks: WebhookReceiver, unique: str, tmp_path: Path
) -> None:
    small = tmp_path / "small.jpg"
    small.write_bytes(images.jpeg(1200, 800))
    large = tmp_path / "large.png"
    side = 3163  # about 30 MB of uncompressed RGB
    Image.frombytes("RGB", (side, side), os.urandom(3 * side * side)).save(
        large, "PNG", compress_level=0
    )
    app = f"http://127.0.0.1:{free_port()}"
    real = real.model_copy(update={"cors_origins": app})
    async with stack(real, unique, origins=[app]) as base:
        seen = await drive(
            "uppy.mjs",
            {
                "base": base,
                "token": token("uma"),
                "appOrigin": app,
                "files": [
                    {"path": str(small), "type": "image/jpeg"},
                    {"path": str(large), "type": "image/png"},
                ],
                "timeout": 180_000,
                "screenshot": artifact("uppy-gallery.png"),
            },
        )
    uploads = {u["name"]: u for u in seen["uploads"]}
    assert all(u["ok"] for u in uploads.values()), uploads
    small_id, large_id = uploads["small.jpg"]["photoId"], uploads["large.png"]["photoId"]
    assert large.stat().st_size > 30 * 10**6
    calls = [r.removeprefix("POST ").removeprefix(base) for r in seen["requests"]]
    parts = math.ceil(large.stat().st_size / real.multipart_part_size)
    assert calls.count(f"/v1/uploads/{large_id}/parts") == parts, "Uppy signs part by part"
    assert f"/v1/uploads/{large_id}/complete" in calls
    assert f"/v1/uploads/{small_id}/parts" not in calls
    assert {c["id"]: c["status"] for c in seen["cards"]} == {
        small_id: "ready",
        large_id: "ready",
    }
    assert hooks.deliveries(large_id, "photo.ready") == 1


def test_the_docs_quote_the_adapter_the_browser_test_runs() -> None:
    root = Path(__file__).parent.parent
    adapter = (root / "docs/examples/darkroom-uppy.js").read_text()
    guide = (root / "docs/clients.md").read_text()
    assert f"```js\n{adapter}```" in guide.split("## Uppy adapter", 1)[1]

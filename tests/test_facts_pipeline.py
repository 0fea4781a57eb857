"""Facts travel from the EXIF block to the record and the photo.ready event; GPS is kept
only with the owner's opt-in and never reaches a rendition."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import aiohttp
import pytest
from PIL import Image

from services.gateway.auth import issue_token
from shared.keys import original_key
from shared.settings import Settings
from shared.storage import open_storage
from shared.store import open_store
from tests import images
from tests.conftest import JWT_SECRET
from tests.harness import ALL_SERVICES, Client, WebhookReceiver, announce, intent, running

pytestmark = pytest.mark.timeout(180)

GPS = {1: "N", 2: (48.0, 51.0, 30.0), 3: "E", 4: (2.0, 21.0, 0.0)}


def photo_with_exif() -> bytes:
    img = images.upright_with_marker(1200, 800)
    exif = images.exif_bytes(
        ifd0={0x010F: "Fujifilm", 0x0110: "X-T5"},
        exif_ifd={0x9003: "2024:05:01 14:03:22", 0x9011: "+02:00", 0x8827: 200},
        gps_ifd=GPS,
    )
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90, exif=exif)
    return out.getvalue()


@pytest.mark.parametrize("keep_location", [False, True])
async def test_facts_recorded_and_location_only_with_opt_in(
    real: Settings, hooks: WebhookReceiver, keep_location: bool
) -> None:
    data = photo_with_exif()
    photo_id = ("a" if keep_location else "b") * 32
    key = original_key("frida", photo_id)
    async with open_storage(real) as storage:
        await storage.ensure_bucket()
        await storage.put(key, data, content_type="image/jpeg")
    photo = intent(photo_id, "frida", len(data), trace_id="facts", keep_location=keep_location)
    async with running(real, ALL_SERVICES) as base, open_store(real) as store:
        await store.create_pending(photo)
        await announce(real, "minio", key, len(data))
        ready = await hooks.wait_for(photo_id, "photo.ready")
        async with aiohttp.ClientSession() as http:
            view = await Client(http, base, issue_token(JWT_SECRET, "frida")).photo(photo_id)
    async with open_store(real) as store:
        record = await store.get(photo_id)
    assert record is not None and record.facts is not None
    facts = record.facts
    assert (facts.camera.make, facts.camera.model, facts.exposure.iso) == ("Fujifilm", "X-T5", 200)
    assert facts.taken_at == datetime(2024, 5, 1, 12, 3, 22, tzinfo=UTC)
    assert facts.taken_at_local == "2024-05-01T14:03:22+02:00"
    assert len(facts.sha256) == 64 and facts.placeholder
    # One shape from the record to the event and the view.
    assert ready["data"]["facts"] == facts.model_dump(mode="json")
    assert view["facts"] == facts.model_dump(mode="json")
    if keep_location:
        assert facts.location is not None
        assert facts.location.latitude == pytest.approx(48.858, abs=1e-3)
        assert facts.location.longitude == pytest.approx(2.35, abs=1e-3)
    else:
        assert facts.location is None
        assert "latitude" not in str(ready) and "latitude" not in str(view)
    async with open_storage(real) as storage:
        for r in record.renditions:
            with Image.open(io.BytesIO(await storage.get(r.object_key))) as img:
                assert not img.getexif(), f"{r.name} carries EXIF"

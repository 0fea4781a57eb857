from __future__ import annotations

import pytest

from shared.errors import InvalidMessage
from shared.events import Envelope, PhotoRejected, PhotoVerified, outcome_event_id


def _intent() -> PhotoVerified:
    return PhotoVerified(
        photo_id="p1",
        owner_id="u1",
        object_key="originals/x/p1",
        etag='"abc"',
        content_type="image/jpeg",
        size=10,
        keep_location=False,
    )


def test_envelope_round_trips_as_versioned_json() -> None:
    env = Envelope.wrap(_intent(), trace_id="t1")
    parsed = Envelope.from_bytes(env.to_bytes())
    assert (parsed.type, parsed.version, parsed.trace_id) == ("photo.verified", 2, "t1")
    assert parsed.open(PhotoVerified) == _intent()


def test_consumer_ignores_fields_added_by_a_newer_producer() -> None:
    env = Envelope.wrap(_intent(), trace_id="t")
    newer = env.model_copy(update={"data": {**env.data, "added_later": 1}})
    assert newer.open(PhotoVerified).photo_id == "p1"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not a Darkroom event envelope"),
        (b'{"id": "x"}', "not a Darkroom event envelope"),
    ],
)
def test_malformed_envelopes_are_invalid_with_a_reason(body: bytes, message: str) -> None:
    with pytest.raises(InvalidMessage, match=message):
        Envelope.from_bytes(body)


def test_unknown_major_version_is_refused() -> None:
    env = Envelope.wrap(_intent(), trace_id="t").model_copy(update={"version": 3})
    with pytest.raises(InvalidMessage, match=r"version 3 is not supported"):
        env.open(PhotoVerified)


def test_wrong_type_and_bad_payload_are_refused() -> None:
    env = Envelope.wrap(_intent(), trace_id="t")
    with pytest.raises(InvalidMessage, match=r"expected a photo\.rejected"):
        env.open(PhotoRejected)
    broken = env.model_copy(update={"data": {**env.data, "size": "many"}})
    with pytest.raises(InvalidMessage, match="size"):
        broken.open(PhotoVerified)


def test_outcome_ids_are_stable_per_photo_and_type() -> None:
    assert outcome_event_id("photo.ready", "p1") == outcome_event_id("photo.ready", "p1")
    assert outcome_event_id("photo.ready", "p1") != outcome_event_id("photo.ready", "p2")
    assert outcome_event_id("photo.ready", "p1") != outcome_event_id("photo.rejected", "p1")

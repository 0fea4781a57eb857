"""Webhook signatures check out with the Standard Webhooks reference library."""

from __future__ import annotations

import base64

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from services.notifier.webhooks import secret_key, sign
from shared.errors import ConfigurationError

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def test_signature_verifies_with_the_reference_implementation() -> None:
    import time

    ts = int(time.time())
    body = b'{"type": "photo.ready", "data": {"photo_id": "p"}}'
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret_key(SECRET), "msg_1", ts, body),
    }
    assert Webhook(SECRET).verify(body, headers)["type"] == "photo.ready"
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body + b" ", headers)


def test_secret_forms() -> None:
    assert secret_key(SECRET) == b"0123456789abcdef0123456789abcdef"
    assert secret_key("plain-secret") == b"plain-secret"
    with pytest.raises(ConfigurationError, match="not base64"):
        secret_key("whsec_!!!")

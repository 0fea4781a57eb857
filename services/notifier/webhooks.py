"""Signed webhook delivery per the Standard Webhooks spec (standardwebhooks.com).

    webhook-id:        the event id (stable across retries and re-publishes: dedupe on it)
    webhook-timestamp: unix seconds at this attempt
    webhook-signature: v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>

A `whsec_`-prefixed secret is base64 after the prefix, as the spec's libraries expect;
any other secret is used as its UTF-8 bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from typing import Any

import aiohttp

from shared.errors import ConfigurationError, TransientError


class DeliveryFailed(TransientError):
    def __init__(self, message: str, *, outcome: str) -> None:
        super().__init__(message)
        self.outcome = outcome  # refused (answered, not 2xx) or unreachable


def secret_key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except binascii.Error as exc:
            raise ConfigurationError("DARKROOM_WEBHOOK_SECRET: whsec_ part is not base64") from exc
    return secret.encode()


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def payload(event_type: str, time_iso: str, data: dict[str, Any]) -> bytes:
    return json.dumps({"type": event_type, "timestamp": time_iso, "data": data}).encode()


async def deliver(
    session: aiohttp.ClientSession,
    url: str,
    key: bytes,
    msg_id: str,
    body: bytes,
    *,
    timeout: float,
) -> None:
    """POST once; raise DeliveryFailed unless the receiver answers 2xx."""
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(key, msg_id, timestamp, body),
    }
    try:
        async with session.post(
            url,
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        ) as resp:
            if not 200 <= resp.status < 300:
                raise DeliveryFailed(f"webhook endpoint answered {resp.status}", outcome="refused")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise DeliveryFailed(
            f"webhook endpoint unreachable: {exc!r}", outcome="unreachable"
        ) from exc

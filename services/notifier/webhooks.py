"""Signed webhook delivery per the Standard Webhooks spec (standardwebhooks.com).

    webhook-id:        the event id (stable across retries and re-publishes: dedupe on it)
    webhook-timestamp: unix seconds at this attempt
    webhook-signature: v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>, one
                       per secret (space-separated) while a rotated secret still signs

A `whsec_`-prefixed secret is base64 after the prefix, as the spec's libraries expect;
any other secret is used as its UTF-8 bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

from shared.errors import ConfigurationError, TransientError

RESPONSE_CAP = 4096  # bytes of a response body read
EXCERPT_CHARS = 500  # of them kept in the delivery log


class DeliveryFailed(TransientError):
    def __init__(self, message: str, *, outcome: str) -> None:
        super().__init__(message)
        self.outcome = outcome  # refused (answered, not 2xx), unreachable or forbidden


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


@dataclass(frozen=True)
class Answer:
    status: int
    excerpt: str  # the start of the response body, for the delivery log


async def deliver(
    session: aiohttp.ClientSession,
    url: str,
    keys: Sequence[bytes],
    msg_id: str,
    body: bytes,
    *,
    timeout: float,
) -> Answer:
    """POST once, signed with every key (several during a secret's rotation); the
    answer, whatever its status. DeliveryFailed if there is none: unreachable, refused
    by the target check, or slower than `timeout` in all."""
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(key, msg_id, timestamp, body) for key in keys),
    }
    try:
        async with session.post(
            url,
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        ) as resp:
            excerpt = await _read_capped(resp.content, RESPONSE_CAP)
            return Answer(resp.status, excerpt.decode(errors="replace")[:EXCERPT_CHARS])
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise DeliveryFailed(
            f"webhook endpoint unreachable: {exc!r}", outcome="unreachable"
        ) from exc


async def _read_capped(stream: aiohttp.StreamReader, cap: int) -> bytes:
    """At most `cap` bytes of the body: a receiver answering with a flood costs nothing."""
    chunks: list[bytes] = []
    size = 0
    while size < cap:
        chunk = await stream.read(cap - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)

"""`darkroom check`: every part the settings name, reached and tried as the services will
use it, before they run: one line each, saying what was found or why it failed.

Run it where the services run (a compose `run`, a Kubernetes Job): it reads the same
DARKROOM_* variables. It changes nothing but one probe object, written under
`darkroom-check/` (outside `originals/`, so no upload is announced) and deleted again.
A signed link is for clients, at DARKROOM_S3_PUBLIC_ENDPOINT_URL when set: one this host
cannot reach is a warning, not a failure.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import aiohttp
import aiosmtplib
from aiobotocore.session import get_session
from botocore.exceptions import ClientError
from redis.exceptions import RedisError

from shared.broker import open_broker
from shared.db import open_database
from shared.errors import DarkroomError, TransientError
from shared.keys import ORIGINALS
from shared.migrations import status
from shared.ratelimit import connect_redis
from shared.settings import Settings
from shared.smtp import SmtpServer
from shared.storage import client_kwargs, open_storage
from shared.topology import Topology

PART_TIMEOUT_S = 20.0
PROBE_PREFIX = "darkroom-check/"


class Verdict(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Finding:
    part: str
    verdict: Verdict
    detail: str

    def line(self) -> str:
        return f"{self.verdict:<4}  {self.part:<9} {' '.join(self.detail.split())}"


class Failed(Exception):
    """A part that does not work as configured; the message says why and what to do."""


class Warned(Exception):
    """A part that works from here but may not for the services' clients."""


async def check(settings: Settings) -> list[Finding]:
    """Every part, one after the other (a failure in one says nothing of the next)."""
    parts: list[tuple[str, Callable[[Settings], Awaitable[str]]]] = [
        ("database", _database),
        ("broker", _broker),
        ("storage", _storage),
        ("notify", _notify),
        ("mail", _mail),
        ("limits", _limits),
    ]
    return [await _finding(name, part, settings) for name, part in parts]


async def _finding(
    name: str, part: Callable[[Settings], Awaitable[str]], settings: Settings
) -> Finding:
    try:
        async with asyncio.timeout(PART_TIMEOUT_S):
            return Finding(name, Verdict.OK, await part(settings))
    except Warned as exc:
        return Finding(name, Verdict.WARN, str(exc))
    except TimeoutError:
        return Finding(name, Verdict.FAIL, f"no answer within {PART_TIMEOUT_S:.0f} s")
    except (Failed, DarkroomError, OSError) as exc:
        return Finding(name, Verdict.FAIL, str(exc) or repr(exc))


async def _database(settings: Settings) -> str:
    if not settings.database_url:
        raise Failed("DARKROOM_DATABASE_URL is not set: only darkroom dev runs on SQLite")
    async with open_database(settings, migrate=False) as db:
        try:
            found = await status(db.engine)
        except Exception as exc:  # the driver's own errors: what they say is the reason
            raise Failed(f"cannot reach it: {exc}") from exc
    if found.behind:
        schema = found.current or "empty"
        raise Failed(f"schema is {schema}, this release needs {found.head}: run darkroom migrate")
    return f"reached; schema at {found.head}"


async def _broker(settings: Settings) -> str:
    if not settings.broker_url:
        raise Failed("DARKROOM_BROKER_URL is not set: only darkroom dev runs without RabbitMQ")
    queues = Topology.from_settings(settings).all_queues()
    # Looked at, never declared: a check changes nothing.
    async with open_broker(settings.model_copy(update={"broker_declare": False})) as broker:
        for spec in queues:
            try:
                await broker.backlog(spec, spec.retry.delays_ms())
            except TransientError as exc:
                if "ACCESS_REFUSED" in str(exc):
                    raise Failed(
                        f"this user may not look at queue {spec.name} or its retry and"
                        " dead-letter queues: check with the administrator's user"
                    ) from exc
                raise Failed(
                    f"queue {spec.name} or one of its retry or dead-letter queues is missing"
                    f" ({exc}): run darkroom broker declare"
                ) from exc
    return f"reached; {len(queues)} queues declared with their retry and dead-letter queues"


async def _storage(settings: Settings) -> str:
    key = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    body = b"darkroom check"
    async with open_storage(settings) as storage:
        try:
            await storage.put(key, body, content_type="text/plain")
        except DarkroomError as exc:
            raise Failed(_storage_refusal(settings, exc)) from exc
        try:
            signed = storage.presigner.signer.presign_url(
                await storage.presigner.credentials(),
                "GET",
                key,
                signed_at=datetime.now(UTC),
                expires_in=60,
                headers={},
            )
            fetched = await _fetch(signed)
        finally:
            await storage.delete(key)
    where = f"bucket {settings.s3_bucket}: write and delete work"
    if isinstance(fetched, str):
        raise Warned(f"{where}, but a signed link {fetched}")
    if fetched != (200, body):
        raise Failed(f"{where}, but storage answered a signed link {fetched[0]}: {fetched[1]!r}")
    return f"{where}, and signed links are honoured"


# What an S3 error code asks of whoever runs the check.
_S3_CODES = {
    "NoSuchBucket": "bucket {bucket} does not exist: create it (docs/operations.md)",
    "InvalidAccessKeyId": "the access key is unknown to storage: check DARKROOM_S3_ACCESS_KEY_ID",
    "SignatureDoesNotMatch": "storage refused the signature: check DARKROOM_S3_SECRET_ACCESS_KEY"
    " and DARKROOM_S3_REGION",
    "AccessDenied": "the credentials may not write to bucket {bucket}",
}


def _storage_refusal(settings: Settings, exc: Exception) -> str:
    code = re.search(r"<Code>([^<]+)</Code>", str(exc))
    if code is None:
        return f"cannot write to bucket {settings.s3_bucket}: {exc}"
    hint = _S3_CODES.get(code[1], "bucket {bucket} refused a write")
    return f"{hint.format(bucket=settings.s3_bucket)} ({code[1]})"


async def _fetch(url: str) -> tuple[int, bytes] | str:
    """The answer to a signed link, or why this host could not reach it."""
    try:
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            return resp.status, (await resp.read())[:300]
    except (aiohttp.ClientError, OSError) as exc:
        return f"cannot be fetched from here ({exc!r}); clients fetch it at {url.split('?')[0]}"


async def _notify(settings: Settings) -> str:
    """Whether the bucket announces every new original, and to the queue configured."""
    kwargs = client_kwargs(settings, settings.s3_endpoint_url)
    async with get_session().create_client("s3", **kwargs) as s3:
        try:
            config = await s3.get_bucket_notification_configuration(Bucket=settings.s3_bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "?")
            if code == "NoSuchBucket":
                raise Failed(f"bucket {settings.s3_bucket} does not exist") from exc
            raise Warned(f"storage does not say what the bucket announces ({code})") from exc
    targets = [_target(c) for kind in _KINDS for c in config.get(kind, ()) if _covers(c)]
    if not targets:
        raise Failed(
            f"the bucket announces no new object under {ORIGINALS}: uploads wait for the"
            " sweep (DARKROOM_SWEEP_AFTER); set it up as docs/operations.md says"
            " (Storage notifications)"
        )
    queue = settings.sqs_queue_url.rstrip("/").rsplit("/", 1)[-1]
    if queue and not any(t.rsplit(":", 1)[-1] == queue for t in targets):
        raise Failed(f"the bucket announces to {', '.join(targets)}, not to the queue {queue}")
    return f"new objects under {ORIGINALS} are announced to {', '.join(targets)}"


_KINDS = ("QueueConfigurations", "TopicConfigurations", "LambdaFunctionConfigurations")


def _covers(rule: dict[str, Any]) -> bool:
    """Whether a notification rule announces every object created under originals/."""
    created = any(e.startswith("s3:ObjectCreated:") for e in rule.get("Events", ()))
    filters = {
        f["Name"].lower(): f["Value"]
        for f in rule.get("Filter", {}).get("Key", {}).get("FilterRules", ())
    }
    return created and ORIGINALS.startswith(filters.get("prefix", "")) and not filters.get("suffix")


def _target(rule: dict[str, Any]) -> str:
    return str(rule.get("QueueArn") or rule.get("TopicArn") or rule.get("LambdaFunctionArn"))


async def _mail(settings: Settings) -> str:
    url = settings.smtp_url.get_secret_value()
    if not url:
        return "off (DARKROOM_SMTP_URL is not set): no mail is sent"
    server = SmtpServer.from_url(url)
    client = server.client(PART_TIMEOUT_S)
    try:
        await client.connect()  # logs in too, when the URL names a login
        await client.quit()
    except aiosmtplib.SMTPException as exc:
        raise Failed(f"{server.host}:{server.port} refused: {exc}") from exc
    finally:
        client.close()
    login = f", logged in as {server.username}" if server.username else ""
    return f"{server.host}:{server.port} answered{login}"


async def _limits(settings: Settings) -> str:
    """The rate limits' shared store (Redis), when the settings name one."""
    if not settings.redis_url:
        return "each gateway replica counts on its own (DARKROOM_REDIS_URL is not set)"
    redis = connect_redis(settings.redis_url)
    try:
        await redis.ping()
    except RedisError as exc:
        raise Failed(f"Redis did not answer: {exc}") from exc
    finally:
        await redis.aclose()
    return "Redis answered: replicas share the rate limits"


def run(settings: Settings) -> int:
    """Print one line a part; 1 if any failed."""
    findings = asyncio.run(check(settings))
    for finding in findings:
        print(finding.line())
    return 1 if any(f.verdict is Verdict.FAIL for f in findings) else 0

"""`darkroom dev`: the whole system in one process on the embedded defaults.

In-process broker, moto's S3/SQS server (its objects kept under DARKROOM_DATA_DIR too:
services/dev_objects.py), SQLite under DARKROOM_DATA_DIR, and an SMTP catcher whose mail
shows at /dev/mail. Each of DARKROOM_BROKER_URL, DARKROOM_DATABASE_URL,
DARKROOM_S3_ENDPOINT_URL and DARKROOM_SMTP_URL swaps its part for the real component.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web
from pydantic import SecretStr

from services.dev_objects import KeptObjects
from services.gateway.auth import issue_token
from services.gateway.pages import DEV_EMAIL
from services.gateway.service import serve as serve_gateway
from services.ingest_worker.service import serve as serve_ingest
from services.notifier.service import serve as serve_notifier
from services.thumbnail_worker.service import serve as serve_thumbnails
from shared.broker import publish_envelope
from shared.embedded import allow_browsers, moto_server, provision_bucket_with_sqs
from shared.events import PhotoVerified, outcome_envelope
from shared.health import serve_health
from shared.logging import get_logger
from shared.resources import Resources, open_resources
from shared.settings import Settings

log = get_logger(__name__)

DEV_USER = "dev"
DEV_SENDER = "Darkroom <darkroom@darkroom.localhost>"
LEFT_VERIFIED = 10_000  # more than a laptop's run leaves mid-pipeline


def dev_secret(settings: Settings) -> str:
    """DARKROOM_AUTH_JWT_SECRET if set, else a secret kept in the data directory so that
    `darkroom token` and a running `darkroom dev` agree."""
    if settings.auth_jwt_secret.get_secret_value():
        return settings.auth_jwt_secret.get_secret_value()
    path = Path(settings.data_dir) / "dev-jwt-secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


async def run_dev(settings: Settings, stop: asyncio.Event) -> None:
    settings = settings.model_copy(
        update={
            "auth_jwt_secret": SecretStr(dev_secret(settings)),
            # Receivers on this machine (http://127.0.0.1:...) are what development uses.
            "webhook_allow_private_targets": True,
        }
    )
    async with AsyncExitStack() as stack:
        if not settings.s3_endpoint_url:
            settings = await _embedded_storage(settings, stack)
        await _run_services(settings, stop)


async def _embedded_storage(settings: Settings, stack: AsyncExitStack) -> Settings:
    """moto in this process, with its objects kept on disk; the settings that reach it."""
    endpoint = stack.enter_context(moto_server(port=settings.dev_s3_port))
    settings = settings.model_copy(
        update={
            "s3_endpoint_url": endpoint,
            "sqs_endpoint_url": endpoint,
            # moto accepts any credentials but botocore insists on having some.
            "s3_access_key_id": settings.s3_access_key_id or "darkroom",
            "s3_secret_access_key": SecretStr(
                settings.s3_secret_access_key.get_secret_value() or "darkroom-secret"
            ),
        }
    )
    kept = KeptObjects(settings)
    # Put back before the bucket announces anything: they are no new uploads.
    queue_url = await provision_bucket_with_sqs(settings, "darkroom-notifications", kept.restore)
    settings = settings.model_copy(update={"sqs_queue_url": queue_url})
    # The upload page sends its bytes straight to this moto, from another origin.
    port = settings.gateway_port
    await allow_browsers(settings, [f"http://{h}:{port}" for h in _page_hosts(settings)])
    await stack.enter_async_context(kept.keeping())
    return settings


async def _run_services(settings: Settings, stop: asyncio.Event) -> None:
    async with AsyncExitStack() as stack:
        extend = None
        if not settings.smtp_url.get_secret_value():
            settings, extend = await _catch_mail(settings, stack)
        await _serve_all(settings, stop, extend)


async def _catch_mail(
    settings: Settings, stack: AsyncExitStack
) -> tuple[Settings, Callable[[web.Application], None]]:
    """Start the SMTP catcher; the settings that send to it, and the /dev/mail pages."""
    from services.dev_mail import CATCHER, mail_routes, smtp_catcher

    catcher, port = await stack.enter_async_context(smtp_catcher(port=settings.dev_smtp_port))
    settings = settings.model_copy(
        update={
            "smtp_url": SecretStr(f"smtp://127.0.0.1:{port}?starttls=false"),
            "mail_from": settings.mail_from or DEV_SENDER,
        }
    )

    def extend(app: web.Application) -> None:
        app[CATCHER] = catcher
        app.add_routes(mail_routes())

    return settings, extend


async def _serve_all(
    settings: Settings, stop: asyncio.Event, extend: Callable[[web.Application], None] | None
) -> None:
    async with open_resources(settings) as res:
        await res.storage.ensure_bucket()
        if not settings.broker_url:
            await _render_what_the_last_run_left(res)
        # Within the token policy like any other token; the upload page signs a fresh one
        # per load, so a long-running dev server never hands out an expired one.
        token = issue_token(
            res.settings.auth_jwt_secret.get_secret_value(),
            DEV_USER,
            ttl_s=res.settings.auth_max_token_lifetime,
            email=DEV_EMAIL,
        )
        _banner(settings, token, mail=extend is not None)
        # One health port for every service: they share these resources and metrics.
        async with serve_health(settings.health_host, settings.health_port, res) as port:
            log.info("health endpoints up", port=port)
            await asyncio.gather(
                serve_gateway(
                    settings, stop, resources=res, dev_user=DEV_USER, health=False, extend=extend
                ),
                serve_ingest(settings, stop, resources=res, health=False),
                serve_thumbnails(settings, stop, resources=res, health=False),
                serve_notifier(settings, stop, resources=res, health=False),
            )


async def _render_what_the_last_run_left(res: Resources) -> None:
    """The in-process broker kept nothing of the last run: a photo verified then and not
    yet rendered (stopped mid-pipeline) would stay so. Its photo.verified goes out again,
    under the event id it had; rendering is idempotent."""
    left = await res.store.verified(limit=LEFT_VERIFIED)
    for photo in left:
        event = PhotoVerified(
            photo_id=photo.id,
            owner_id=photo.owner_id,
            object_key=photo.object_key,
            etag=photo.etag,
            content_type=photo.content_type or photo.declared_type,
            size=photo.size or photo.declared_size,
            keep_location=photo.keep_location,
        )
        envelope = outcome_envelope(event, photo_id=photo.id, trace_id=photo.trace_id)
        await publish_envelope(res.broker, res.topology, envelope)
    if left:
        log.info("photos left verified by the last run sent to render", count=len(left))


def _page_hosts(settings: Settings) -> list[str]:
    """The names a browser on this machine opens the upload page by."""
    host = settings.gateway_host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - compared, not bound
        return ["127.0.0.1", "localhost"]
    return sorted({host, "127.0.0.1", "localhost"})


def redact_url(url: str) -> str:
    """The URL without its password, for printing."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _banner(settings: Settings, token: str, *, mail: bool) -> None:
    url = f"http://{settings.gateway_host}:{settings.gateway_port}/"
    smtp = redact_url(settings.smtp_url.get_secret_value())
    mailbox = f"{url}dev/mail (caught by the SMTP catcher)" if mail else f"sent via {smtp}"
    print(
        "\n  Darkroom is running (embedded mode)\n"
        f"    upload page : {url}\n"
        f"    metrics     : http://{settings.health_host}:{settings.health_port}/metrics\n"
        f"    storage     : {settings.s3_endpoint_url} (bucket {settings.s3_bucket})\n"
        f"    broker      : {redact_url(settings.broker_url) or 'in-process'}\n"
        f"    database    : {redact_url(settings.effective_database_url)}\n"
        f"    mail        : {mailbox}\n"
        f"    dev token   : {token}\n"
        f"    try         : curl -H 'Authorization: Bearer <token>' {url}v1/photos/<id>\n",
        flush=True,
    )

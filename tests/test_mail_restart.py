"""A notifier killed after its mail went out, but before the broker heard so, does not
mail anyone twice when it comes back: real notifier processes, RabbitMQ, PostgreSQL and
an aiosmtpd server."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import pytest
from aiosmtpd.smtp import SMTP, Session
from aiosmtpd.smtp import Envelope as SmtpEnvelope
from pydantic import SecretStr

from chaos.servers import die_with_parent
from chaos.tcp_proxy import TcpProxy
from services.dev_mail import MailCatcher, smtp_catcher
from shared.resources import open_resources
from shared.settings import Settings
from shared.topology import Topology
from tests.conftest import delete_topology
from tests.harness import free_port, process_env

pytestmark = pytest.mark.processes


class CatcherThatSilencesTheBroker(MailCatcher):
    """Takes each mail and, at the first, stops the notifier's broker traffic: the mail
    is accepted, but the notifier's ack of its message never reaches RabbitMQ."""

    def __init__(self, proxy: TcpProxy) -> None:
        super().__init__()
        self.proxy = proxy

    async def handle_DATA(self, server: SMTP, session: Session, envelope: SmtpEnvelope) -> str:
        self.proxy.pause()
        return await super().handle_DATA(server, session, envelope)


@asynccontextmanager
async def notifier(settings: Settings) -> AsyncIterator[asyncio.subprocess.Process]:
    port = free_port()
    env = process_env(
        settings,
        DARKROOM_HEALTH_PORT=str(port),
        DARKROOM_SMTP_URL=settings.smtp_url.get_secret_value(),
        DARKROOM_MAIL_FROM=settings.mail_from,
        DARKROOM_SMTP_TIMEOUT=str(settings.smtp_timeout),
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.notifier",
        env=env,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=die_with_parent,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def logged(process: asyncio.subprocess.Process, *events: str) -> str:
    """Read the process's JSON log until a line with one of `events`; returns which."""
    assert process.stderr is not None
    async with asyncio.timeout(60):
        while line := await process.stderr.readline():
            event = json.loads(line).get("event") if line.startswith(b"{") else None
            if event in events:
                return str(event)
    raise AssertionError(f"the notifier exited without logging any of {events!r}")


def through(proxy: TcpProxy, url: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}:{parts.password}@127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


async def test_a_notifier_killed_between_sending_and_acking_does_not_send_again(
    settings: Settings, amqp_url: str, postgres_url: str, proxy: TcpProxy
) -> None:
    catcher = CatcherThatSilencesTheBroker(proxy)
    async with smtp_catcher(catcher=catcher) as (_, smtp_port):
        direct = settings.model_copy(
            update={
                "broker_url": amqp_url,
                "database_url": postgres_url,
                "smtp_url": SecretStr(f"smtp://127.0.0.1:{smtp_port}?starttls=false"),
                "mail_from": "Darkroom <photos@example.com>",
            }
        )
        proxied = direct.model_copy(update={"broker_url": through(proxy, amqp_url)})
        try:
            async with open_resources(direct) as res:
                async with notifier(proxied) as first:
                    await logged(first, "consuming")
                    created = await res.users.record("kim", "kim@example.com", trace_id="t")
                    assert created is not None
                    await res.outbox.publish(created)
                    await catcher.wait_for(1)
                    while await res.mails.sent("kim") < 1:  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
                    first.send_signal(signal.SIGKILL)
                    await first.wait()
                # The broker sees the connection go without the ack: it hands the mail's
                # message to the next notifier.
                proxy.cut()
                proxy.resume()
                async with notifier(proxied) as second:
                    assert await logged(second, "mail already sent", "mail sent") == (
                        "mail already sent"
                    )
                    second.send_signal(signal.SIGTERM)
                    assert await second.wait() == 0
                assert [m.to for m in catcher.caught] == ["kim@example.com"]
                assert await res.mails.sent("kim") == 1
        finally:
            await delete_topology(amqp_url, Topology.from_settings(direct))

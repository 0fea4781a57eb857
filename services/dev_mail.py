"""`darkroom dev`'s SMTP catcher, and the page at /dev/mail that shows what it caught.

The catcher is aiosmtpd in the dev process's own event loop, on 127.0.0.1: the notifier
sends to it like to any SMTP server, and it keeps the last mails in memory. The page
lists them and shows each one's text part as text and its HTML part in a sandboxed
iframe (no scripts, an origin of its own), under the pages' CSP; only a browser on the
same machine is answered, as for the dev token (services/gateway/pages.py).
"""

from __future__ import annotations

import asyncio
import html
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session

from services.gateway.pages import loopback_host, page_headers

KEPT = 100
MAIL_PAGE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-src 'self'; "
    "form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class CaughtMail:
    number: int
    sender: str
    to: str
    subject: str
    date: str
    text: str
    html: str
    received_at: datetime
    raw: bytes  # as the server received it


class MailCatcher:
    """An aiosmtpd handler that keeps what it is sent; `caught` is newest first."""

    def __init__(self) -> None:
        self.caught: deque[CaughtMail] = deque(maxlen=KEPT)
        self._count = 0
        self._arrived = asyncio.Condition()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        data = raw if isinstance(raw, bytes) else raw.encode()
        message = message_from_bytes(data, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self._count += 1
        self.caught.appendleft(
            CaughtMail(
                self._count,
                str(message.get("From", "")),
                str(message.get("To", "")),
                str(message.get("Subject", "")),
                str(message.get("Date", "")),
                _part(message, "plain"),
                _part(message, "html"),
                datetime.now(UTC),
                data,
            )
        )
        async with self._arrived:
            self._arrived.notify_all()
        return "250 Message accepted for delivery"

    async def wait_for(self, count: int, timeout: float = 30) -> list[CaughtMail]:
        """Once at least `count` mails arrived, all of them, oldest first."""
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: self._count >= count), timeout)
        return list(reversed(self.caught))


def _part(message: EmailMessage, subtype: str) -> str:
    part = message.get_body(preferencelist=(subtype,))
    if part is None or part.get_content_subtype() != subtype:
        return ""
    content: Any = part.get_content()
    return content if isinstance(content, str) else ""


@asynccontextmanager
async def smtp_catcher(
    host: str = "127.0.0.1", port: int = 0, catcher: MailCatcher | None = None
) -> AsyncIterator[tuple[MailCatcher, int]]:
    """Serve a catcher (a new one by default) until the block ends; yields it and the
    port it listens on."""
    catcher = catcher or MailCatcher()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(catcher, hostname="darkroom-dev"), host, port)
    try:
        yield catcher, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


CATCHER = web.AppKey("mail_catcher", MailCatcher)

_STYLE = (
    "body{font-family:sans-serif;margin:2rem;max-width:60rem}"
    "table{border-collapse:collapse}td,th{padding:.3rem .8rem;border-bottom:1px solid #ddd;"
    "text-align:left}pre{white-space:pre-wrap;background:#f6f6f6;padding:1rem}"
    "iframe{width:100%;height:24rem;border:1px solid #ccc}"
)


def _page(title: str, body: str) -> web.Response:
    document = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body>{body}</body></html>\n"
    )
    return web.Response(
        text=document, content_type="text/html", headers=page_headers(MAIL_PAGE_CSP)
    )


def _same_machine(request: web.Request) -> None:
    if "Origin" in request.headers or not loopback_host(request.host):
        raise web.HTTPNotFound()


async def mail_list(request: web.Request) -> web.Response:
    _same_machine(request)
    e = html.escape
    rows = "".join(
        f'<tr><td><a href="/dev/mail/{m.number}">{e(m.subject) or "(no subject)"}</a></td>'
        f"<td>{e(m.to)}</td><td>{e(m.date)}</td></tr>\n"
        for m in request.app[CATCHER].caught
    )
    table = (
        f"<table><tr><th>Subject</th><th>To</th><th>Date</th></tr>\n{rows}</table>"
        if rows
        else "<p>No mail yet. A user's first request with an <code>email</code> claim "
        "(the dev token has one) sends a welcome mail.</p>"
    )
    return _page("Caught mail", f"<h1>Caught mail</h1>\n{table}")


async def mail_view(request: web.Request) -> web.Response:
    _same_machine(request)
    number = int(request.match_info["number"])
    mail = next((m for m in request.app[CATCHER].caught if m.number == number), None)
    if mail is None:
        raise web.HTTPNotFound()
    e = html.escape
    # srcdoc is an attribute: escaped once for it; the sandbox keeps scripts, forms and
    # the page's origin away from whatever the HTML part holds.
    frame = f'<iframe sandbox="" srcdoc="{e(mail.html, quote=True)}"></iframe>'
    body = (
        f'<p><a href="/dev/mail">All mail</a></p><h1>{e(mail.subject)}</h1>\n'
        f"<p>From {e(mail.sender)} to {e(mail.to)}, {e(mail.date)}</p>\n"
        f"<h2>HTML part</h2>\n{frame if mail.html else '<p>(none)</p>'}\n"
        f"<h2>Text part</h2>\n<pre>{e(mail.text) or '(none)'}</pre>\n"
    )
    return _page(mail.subject or "Mail", body)


def mail_routes() -> list[web.AbstractRouteDef]:
    return [web.get("/dev/mail", mail_list), web.get(r"/dev/mail/{number:\d{1,9}}", mail_view)]

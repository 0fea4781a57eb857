"""Talking to the SMTP server: where it is (DARKROOM_SMTP_URL), and one send, its
failures sorted into what a retry may cure and what it cannot.

    smtp://user:pass@host[:25]                 STARTTLS if the server offers it
    smtp://user:pass@host[:587]?starttls=true  STARTTLS required (refuses to send without)
    smtp://host:1025?starttls=false            plain (a local catcher, `darkroom dev`)
    smtps://user:pass@host[:465]               TLS from the first byte

User and password are URL-encoded (`%40` for `@`). Without a user, nothing is logged in.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import parseaddr
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from shared.errors import PermanentError, TransientError
from shared.text import usable_email

_STARTTLS = {"true": True, "false": False}


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    username: str | None
    password: str | None
    use_tls: bool
    start_tls: bool | None  # None: if offered

    @classmethod
    def from_url(cls, url: str) -> SmtpServer:
        """The server `url` names; ValueError says what is wrong with it."""
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps"):
            raise ValueError("must start with smtp:// or smtps://")
        if not parts.hostname:
            raise ValueError("names no host")
        query = parse_qs(parts.query)
        unknown = set(query) - {"starttls"}
        if unknown:
            raise ValueError(f"unknown parameter(s) {', '.join(sorted(unknown))}")
        raw = query.get("starttls", [""])[-1].lower()
        if raw and raw not in _STARTTLS:
            raise ValueError("starttls must be true or false")
        start_tls = _STARTTLS.get(raw)
        implicit = parts.scheme == "smtps"
        if implicit and start_tls is not None:
            raise ValueError("smtps:// is TLS already; starttls applies to smtp:// only")
        default_port = 465 if implicit else 587 if start_tls else 25
        return cls(
            host=parts.hostname,
            port=parts.port or default_port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            use_tls=implicit,
            start_tls=False if implicit else start_tls,
        )

    def client(self, timeout: float) -> aiosmtplib.SMTP:
        """A client for this server, not yet connected (connecting logs in too)."""
        return aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            use_tls=self.use_tls,
            start_tls=self.start_tls,
            timeout=timeout,
        )


def smtp_url_problem(url: str) -> str | None:
    try:
        SmtpServer.from_url(url)
    except ValueError as exc:
        return str(exc)
    return None


def sender_problem(mail_from: str) -> str | None:
    """Why `mail_from` cannot be the From of Darkroom's mails (`Name <addr>` or `addr`)."""
    if not mail_from:
        return "must be set when DARKROOM_SMTP_URL is (e.g. 'Darkroom <photos@example.com>')"
    if "\r" in mail_from or "\n" in mail_from:
        return "must be one line"
    if usable_email(parseaddr(mail_from)[1]) is None:
        return "holds no usable address"
    return None


class MailRefused(PermanentError):
    """The server refused this mail for good (a 5xx answer): retrying cannot help."""


class MailNotSent(TransientError):
    what = "the SMTP server"


async def send(server: SmtpServer, message: EmailMessage, *, timeout: float) -> None:
    """Hand `message` to the server; returns once it accepted it (250 after DATA).

    4xx answers, timeouts and lost connections before that raise MailNotSent (retried);
    5xx answers MailRefused (parked), but not a failed login, which is the operator's to
    fix, so the mail waits for it like any transient failure. Once the server accepted
    the mail nothing raises: a goodbye that fails or hangs must not get it sent again."""
    client = server.client(timeout)
    try:
        try:
            async with asyncio.timeout(timeout):
                await client.connect()
                await client.send_message(message)
        except Exception as exc:
            if (kind := _sorted(exc)) is exc:
                raise
            raise kind from exc
        with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
            async with asyncio.timeout(timeout):
                await client.quit()
    finally:
        client.close()


def _sorted(exc: Exception) -> Exception:
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return MailNotSent(f"SMTP login failed: {exc}")
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        kind = MailRefused if all(c >= 500 for c in codes) else MailNotSent
        return kind(f"SMTP server refused the recipient: {exc.recipients[0]}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        kind = MailRefused if exc.code >= 500 else MailNotSent
        return kind(f"SMTP server answered {exc.code}: {exc.message}")
    if isinstance(exc, aiosmtplib.SMTPException | OSError | TimeoutError):
        return MailNotSent(f"SMTP server unreachable: {exc!r}")
    return exc

"""What a mail says and how it is built, the addresses and SMTP servers Darkroom accepts,
and the ledger that keeps a mail from going out twice."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import jwt
import pytest
from pydantic import SecretStr, ValidationError

from services.gateway.auth import Identity, JwtVerifier
from shared.db import open_database
from shared.mail import Letter, compose, member_added, message_id, welcome
from shared.settings import Settings
from shared.smtp import SmtpServer
from shared.text import usable_email
from shared.users import Claim, Mails
from tests.conftest import JWT_SECRET, make_settings

SENDER = "Darkroom <photos@example.com>"
HOSTILE = 'Tea & <b>cake</b>\r\nBcc: everyone@example.org\u202e "quoted"'


def parsed(letter: Letter, to: str = "cora@example.com", mid: str = "<m@example.com>") -> Any:
    built = compose(
        letter, sender=SENDER, to=to, message_id=mid, date=datetime(2026, 11, 30, tzinfo=UTC)
    )
    message = message_from_bytes(built.as_bytes(), policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_a_mail_has_a_plain_text_part_and_an_html_part_saying_the_same() -> None:
    message = parsed(welcome())
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(preferencelist=("plain",))
    page = message.get_body(preferencelist=("html",))
    assert text.get_content_type() == "text/plain" and page.get_content_type() == "text/html"
    assert "Your Darkroom account is ready." in text.get_content()
    assert "<p>Welcome! Your Darkroom account is ready.</p>" in page.get_content()
    assert (message["From"], message["To"]) == (SENDER, "cora@example.com")
    assert message["Subject"] == "Welcome to Darkroom"
    assert message["Message-ID"] == "<m@example.com>"


def test_text_a_user_chose_cannot_add_headers_markup_or_bidi_controls() -> None:
    message = parsed(member_added(HOSTILE, "olive", "viewer"))
    assert message["Bcc"] is None and message.get_all("Bcc") is None
    subject = message["Subject"]
    assert "\n" not in subject and "\r" not in subject and "\u202e" not in subject
    assert "Tea & <b>cake</b> Bcc: everyone@example.org" in subject
    page = message.get_body(preferencelist=("html",)).get_content()
    assert "<b>" not in page and "Tea &amp; &lt;b&gt;cake&lt;/b&gt;" in page
    assert "&quot;quoted&quot;" in page
    text = message.get_body(preferencelist=("plain",)).get_content()
    assert "Tea & <b>cake</b> Bcc: everyone@example.org" in text and "\u202e" not in text


def test_a_long_title_is_shortened_in_the_subject() -> None:
    message = parsed(member_added("x" * 500, "olive", "contributor"))
    assert len(message["Subject"]) < 120 and message["Subject"].count("x") < 100


def test_message_ids_are_one_per_event_and_user_and_in_the_senders_domain() -> None:
    first = message_id("event-1", "cora", SENDER)
    assert first == message_id("event-1", "cora", SENDER)
    assert first != message_id("event-1", "dan", SENDER)
    assert first != message_id("event-2", "cora", SENDER)
    assert first.startswith("<") and first.endswith("@example.com>")


@pytest.mark.parametrize(
    ("claim", "usable"),
    [
        ("cora@example.com", True),
        ("first.last+tag@mail.example.co.uk", True),
        ("cora@example.com, dan@example.com", False),
        ("Cora <cora@example.com>", False),
        ("cora@example.com\r\nBcc: dan@example.com", False),
        ("cora @example.com", False),
        ("cora@localhost", False),
        ("@example.com", False),
        ("cora@@example.com", False),
        ("a" * 250 + "@example.com", False),
        ("", False),
        (None, False),
        (["cora@example.com"], False),
    ],
)
def test_only_one_plain_address_is_taken_from_a_token(claim: object, usable: bool) -> None:
    assert (usable_email(claim) is not None) is usable


@pytest.mark.parametrize(
    ("url", "server"),
    [
        ("smtp://mail.example.com", ("mail.example.com", 25, None, None, False, None)),
        (
            "smtp://u%40x:p%2Fw@mail.example.com:2525?starttls=true",
            ("mail.example.com", 2525, "u@x", "p/w", False, True),
        ),
        (
            "smtp://mail.example.com?starttls=true",
            ("mail.example.com", 587, None, None, False, True),
        ),
        ("smtp://127.0.0.1:1025?starttls=false", ("127.0.0.1", 1025, None, None, False, False)),
        ("smtps://u:p@mail.example.com", ("mail.example.com", 465, "u", "p", True, False)),
    ],
)
def test_smtp_urls_name_the_server_its_login_and_its_tls(url: str, server: tuple[Any, ...]) -> None:
    s = SmtpServer.from_url(url)
    assert (s.host, s.port, s.username, s.password, s.use_tls, s.start_tls) == server


@pytest.mark.parametrize(
    ("url", "mail_from", "complaint"),
    [
        ("http://mail.example.com", SENDER, "smtp:// or smtps://"),
        ("smtps://mail.example.com?starttls=true", SENDER, "TLS already"),
        ("smtp://mail.example.com?starttls=maybe", SENDER, "true or false"),
        ("smtp://mail.example.com?tls=1", SENDER, "unknown parameter"),
        ("smtp://mail.example.com", "", "DARKROOM_MAIL_FROM"),
        ("smtp://mail.example.com", "Darkroom <nobody>", "no usable address"),
    ],
)
def test_smtp_settings_that_cannot_work_are_refused_at_start(
    url: str, mail_from: str, complaint: str
) -> None:
    with pytest.raises(ValidationError, match=complaint):
        Settings(smtp_url=SecretStr(url), mail_from=mail_from)


async def test_a_mail_is_claimed_by_one_sender_and_skipped_once_sent(tmp_path: Any) -> None:
    async with open_database(make_settings(data_dir=tmp_path)) as db:
        mails = Mails(db)
        assert await mails.claim("e1", "cora", "<m>", lease_s=60) is Claim.CLAIMED
        assert await mails.claim("e1", "cora", "<m>", lease_s=60) is Claim.BUSY
        assert await mails.claim("e1", "dan", "<m2>", lease_s=60) is Claim.CLAIMED
        await mails.mark_sent("e1", "cora")
        assert await mails.claim("e1", "cora", "<m>", lease_s=60) is Claim.SENT
        assert await mails.sent("cora") == 1


async def test_a_claim_whose_sender_died_or_failed_is_taken_over(tmp_path: Any) -> None:
    async with open_database(make_settings(data_dir=tmp_path)) as db:
        mails = Mails(db)
        assert await mails.claim("e1", "cora", "<m>", lease_s=0.05) is Claim.CLAIMED
        await asyncio.sleep(0.1)  # the lease is a span of time: let it run out
        assert await mails.claim("e1", "cora", "<m>", lease_s=60) is Claim.CLAIMED
        await mails.release("e1", "cora")
        assert await mails.claim("e1", "cora", "<m>", lease_s=60) is Claim.CLAIMED
        await mails.mark_sent("e1", "cora")
        await mails.release("e1", "cora")  # too late: it went out
        assert await mails.claim("e1", "cora", "<m>", lease_s=60) is Claim.SENT


@pytest.mark.parametrize(
    ("claims", "email"),
    [
        ({"email": "cora@example.com"}, "cora@example.com"),
        ({"email": "cora@example.com", "email_verified": True}, "cora@example.com"),
        ({"email": "cora@example.com", "email_verified": False}, None),
        ({"email": "cora@example.com\r\nBcc: x@example.org"}, None),
        ({}, None),
    ],
)
async def test_a_token_gives_its_users_address_unless_unverified_or_unusable(
    claims: dict[str, Any], email: str | None
) -> None:
    now = int(time.time())
    token = jwt.encode({"sub": "cora", "iat": now, "exp": now + 60, **claims}, JWT_SECRET)
    verifier = JwtVerifier(JWT_SECRET, None, "", "", leeway=0, max_lifetime=3600)
    assert await verifier.identity(token) == Identity("cora", email)
    assert await verifier.identity(token) == Identity("cora", email)  # cached alike

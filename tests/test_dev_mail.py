"""`darkroom dev`'s mail page: what its SMTP catcher caught, shown safely, to a browser on
the same machine only, and on no other gateway."""

from __future__ import annotations

import html
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiosmtplib
import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.dev import _banner
from services.dev_mail import CATCHER, MailCatcher, mail_routes, smtp_catcher
from services.gateway.app import create_app
from shared.mail import compose, member_added
from shared.resources import open_resources
from shared.settings import Settings
from tests.gateway_harness import gateway

TITLE = '<script>alert(1)</script> "Party" & <img src=x onerror=alert(2)>'


@pytest.fixture
async def dev_page(
    settings: Settings,
) -> AsyncIterator[tuple[TestClient[Any, Any], MailCatcher, int]]:
    """A gateway as `darkroom dev` serves it, with its catcher on a free port."""
    async with smtp_catcher() as (catcher, port), open_resources(settings) as res:
        app = create_app(settings, resources=res, dev_user="dev")
        app[CATCHER] = catcher
        app.add_routes(mail_routes())
        client = TestClient(TestServer(app))
        await client.start_server()
        try:
            yield client, catcher, port
        finally:
            await client.close()


async def send_one(port: int) -> None:
    message = compose(
        member_added(TITLE, "olive", "viewer"),
        sender="Darkroom <photos@example.com>",
        to="cora@example.com",
        message_id="<one@example.com>",
        date=datetime(2026, 11, 30, 12, tzinfo=UTC),
    )
    await aiosmtplib.send(message, hostname="127.0.0.1", port=port, start_tls=False)


async def test_the_mail_page_lists_a_caught_mail_and_shows_both_its_parts_inert(
    dev_page: tuple[TestClient[Any, Any], MailCatcher, int],
) -> None:
    client, catcher, port = dev_page
    empty = await client.get("/dev/mail")
    assert empty.status == 200 and "No mail yet" in await empty.text()
    await send_one(port)
    await catcher.wait_for(1)
    listing = await client.get("/dev/mail")
    page = await listing.text()
    csp = listing.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert listing.headers["X-Frame-Options"] == "DENY"
    assert "cora@example.com" in page and "Mon, 30 Nov 2026 12:00:00 +0000" in page
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'href="/dev/mail/1"' in page

    shown = await client.get("/dev/mail/1")
    page = await shown.text()
    assert shown.status == 200 and "<script>" not in page and "<img" not in page
    frame = page[page.index("<iframe") : page.index("</iframe>")]
    assert 'sandbox=""' in frame
    # The HTML part, escaped once more for the attribute: the frame's document is the
    # mail's HTML, in which the title is text.
    srcdoc = html.unescape(frame[frame.index('srcdoc="') + 8 : frame.rindex('"')])
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in srcdoc and "<script>" not in srcdoc
    text = page[page.index("<pre>") : page.index("</pre>")]
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &quot;Party&quot; &amp;" in text


async def test_the_mail_page_answers_only_a_browser_on_the_same_machine(
    dev_page: tuple[TestClient[Any, Any], MailCatcher, int],
) -> None:
    client, catcher, port = dev_page
    await send_one(port)
    await catcher.wait_for(1)
    for path in ("/dev/mail", "/dev/mail/1"):
        assert (await client.get(path, headers={"Host": "evil.example"})).status == 404
        assert (await client.get(path, headers={"Origin": "http://evil.example"})).status == 404
    assert (await client.get("/dev/mail/2")).status == 404


async def test_a_gateway_outside_dev_mode_has_no_mail_page(settings: Settings) -> None:
    async with gateway(settings) as gw:
        assert (await gw.client.get("/dev/mail")).status == 404


def test_the_dev_banner_names_the_mail_page(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    _banner(settings, "token", mail=True)
    url = f"http://{settings.gateway_host}:{settings.gateway_port}/dev/mail"
    assert url in capsys.readouterr().out

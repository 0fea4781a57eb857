"""Mail people get, end to end on the embedded defaults: a gateway and a notifier sending
to a real aiosmtpd server on a free port (the catcher `darkroom dev` runs)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiosmtpd.smtp import SMTP, Session
from aiosmtpd.smtp import Envelope as SmtpEnvelope
from pydantic import SecretStr

from services.dev_mail import CaughtMail, MailCatcher, smtp_catcher
from services.gateway.apikeys import create_key
from services.gateway.app import create_app
from services.gateway.auth import issue_token
from services.notifier.service import serve as notifier
from shared.broker import publish_envelope
from shared.events import Envelope, MailRequested, UserCreated, WebhookDisabled
from shared.settings import Settings
from shared.topology import Topology
from tests.conftest import JWT_SECRET, delete_topology
from tests.gateway_harness import Gateway, gateway, problem_of

pytestmark = pytest.mark.slow
SENDER = "Darkroom <photos@example.com>"


class FlakyCatcher(MailCatcher):
    """Answers each of `refusals` in turn to the mails it is sent, then accepts them."""

    def __init__(self, *refusals: str) -> None:
        super().__init__()
        self.refusals = list(refusals)
        self.refused = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: SmtpEnvelope) -> str:
        if self.refusals:
            self.refused += 1
            return self.refusals.pop(0)
        return await super().handle_DATA(server, session, envelope)


@dataclass
class Mailing:
    gw: Gateway
    catcher: MailCatcher

    def auth(self, user: str, email: str | None = None) -> dict[str, str]:
        token = issue_token(JWT_SECRET, user, email=email or f"{user}@example.com")
        return {"Authorization": f"Bearer {token}"}

    async def ok(self, user: str, method: str, path: str, body: Any = None) -> Any:
        resp = await self.gw.client.request(method, path, json=body, headers=self.auth(user))
        assert resp.status < 300, await resp.text()
        return None if resp.status == 204 else await resp.json()

    def to(self, address: str) -> list[CaughtMail]:
        return [m for m in self.catcher.caught if m.to == address]


async def _mailing(settings: Settings, catcher: MailCatcher) -> AsyncIterator[Mailing]:
    async with smtp_catcher(catcher=catcher) as (_, port):
        mailed = settings.model_copy(
            update={
                "smtp_url": SecretStr(f"smtp://127.0.0.1:{port}?starttls=false"),
                "mail_from": SENDER,
                "rate_limit_user": 0,
                "rate_limit_ip": 0,
                "reveal_interval": 0.1,
            }
        )
        async with gateway(mailed) as gw:
            stop = asyncio.Event()
            task = asyncio.create_task(notifier(mailed, stop, resources=gw.res, health=False))
            try:
                yield Mailing(gw, catcher)
            finally:
                stop.set()
                await task


@pytest.fixture
async def mail(settings: Settings) -> AsyncIterator[Mailing]:
    async for mailing in _mailing(settings, MailCatcher()):
        yield mailing


async def test_a_user_is_welcomed_once_however_many_requests_and_only_with_an_address(
    mail: Mailing,
) -> None:
    await asyncio.gather(*(mail.ok("wendy", "GET", "/v1/photos") for _ in range(10)))
    for _ in range(10):
        await mail.ok("wendy", "GET", "/v1/photos")
    anonymous = issue_token(JWT_SECRET, "nobody")
    resp = await mail.gw.client.get("/v1/photos", headers={"Authorization": f"Bearer {anonymous}"})
    assert resp.status == 200
    await mail.ok("xavier", "GET", "/v1/photos")
    # xavier's mail is the barrier: wendy's requests, and any user.created they caused,
    # all came before his.
    await sent(mail, "xavier", 1)
    assert [m.subject for m in mail.to("wendy@example.com")] == ["Welcome to Darkroom"]
    assert await mail.gw.res.mails.sent("wendy") == 1
    assert await mail.gw.res.mails.sent("nobody") == 0
    assert await mail.gw.res.users.get("nobody") is None, "nothing to record without an address"
    assert len(mail.catcher.caught) == 2
    raw = message_from_bytes(mail.to("wendy@example.com")[0].raw, policy=policy.default)
    assert isinstance(raw, EmailMessage)
    assert raw.get_body(preferencelist=("plain",)) is not None
    assert raw.get_body(preferencelist=("html",)) is not None


async def test_a_gateway_records_a_user_once_not_on_every_request(
    mail: Mailing, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = mail.gw.res.users
    calls: list[str] = []
    record = type(users).record

    async def counted(self: Any, user_id: str, email: str, *, trace_id: str) -> Any:
        calls.append(user_id)
        return await record(self, user_id, email, trace_id=trace_id)

    monkeypatch.setattr(type(users), "record", counted)
    for _ in range(20):
        await mail.ok("yara", "GET", "/v1/photos")
    assert calls == ["yara"]
    plain = {"Authorization": f"Bearer {issue_token(JWT_SECRET, 'yara')}"}
    assert (await mail.gw.client.get("/v1/photos", headers=plain)).status == 200
    assert calls == ["yara"], "a token without an address records nothing"
    # A new address in a token is recorded (once), and mail goes there.
    for _ in range(3):
        resp = await mail.gw.client.get("/v1/photos", headers=mail.auth("yara", "y@example.org"))
        assert resp.status == 200
    assert calls == ["yara", "yara"]
    assert (await users.get("yara")).email == "y@example.org"  # type: ignore[union-attr]


async def test_members_with_an_address_hear_they_were_added_and_that_the_album_developed(
    mail: Mailing,
) -> None:
    for user in ("olive", "cora"):
        await mail.ok(user, "GET", "/v1/photos")
    await mail.catcher.wait_for(2)  # their welcome mails
    soon = (datetime.now(UTC) + timedelta(milliseconds=500)).isoformat()
    title = "<b>Tea</b> & cake"
    made = await mail.ok("olive", "POST", "/v1/albums", {"title": title, "reveal_at": soon})
    for member in ("cora", "dan"):  # dan never used Darkroom: no address known
        body = {"role": "contributor"}
        await mail.ok("olive", "PUT", f"/v1/albums/{made['id']}/members/{member}", body)
    await mail.catcher.wait_for(5)
    subjects = sorted((m.to, m.subject) for m in list(mail.catcher.caught)[:3])
    assert subjects == [
        ("cora@example.com", "You were added to the album “<b>Tea</b> & cake”"),
        ("cora@example.com", "Your album “<b>Tea</b> & cake” has developed"),
        ("olive@example.com", "Your album “<b>Tea</b> & cake” has developed"),
    ]
    added = next(m for m in mail.to("cora@example.com") if "added" in m.subject)
    assert "&lt;b&gt;Tea&lt;/b&gt; &amp; cake" in added.html and "<b>Tea" not in added.html
    assert "“<b>Tea</b> & cake”" in added.text and "olive" in added.text


async def test_mail_turned_off_is_not_requested_nor_sent_if_requested_before(
    mail: Mailing,
) -> None:
    prefs = "/v1/me/preferences"
    assert await mail.ok("cora", "GET", prefs) == {"email_notifications": True}
    await sent(mail, "cora", 1)  # her welcome, before she turned mail off
    assert await mail.ok("cora", "PUT", prefs, {"email_notifications": False}) == {
        "email_notifications": False
    }
    assert await mail.ok("cora", "GET", prefs) == {"email_notifications": False}
    made = await mail.ok("olive", "POST", "/v1/albums", {"title": "Party"})
    await mail.ok("olive", "PUT", f"/v1/albums/{made['id']}/members/cora", {"role": "viewer"})
    # A mail requested before she turned it off, reaching the sender only now.
    trigger = Envelope.wrap(UserCreated(user_id="cora", email="cora@example.com"), trace_id="t")
    late = Envelope.wrap(MailRequested(user_id="cora", trigger=trigger), trace_id="t")
    await publish_envelope(mail.gw.res.broker, mail.gw.res.topology, late)
    await mail.ok("dan", "GET", "/v1/photos")
    await mail.ok("olive", "PUT", f"/v1/albums/{made['id']}/members/dan", {"role": "viewer"})
    await sent(mail, "dan", 2)  # his welcome and his invitation, after cora's
    assert [m.subject for m in mail.to("cora@example.com")] == ["Welcome to Darkroom"]
    assert await mail.gw.res.mails.sent("cora") == 1


async def test_the_preferences_route_takes_a_boolean_and_its_callers_as_a_matrix(
    mail: Mailing,
) -> None:
    prefs = "/v1/me/preferences"
    client, res = mail.gw.client, mail.gw.res
    await problem_of(await client.get(prefs), 401)
    for bad in ({"email_notifications": "no"}, {}, {"email_notifications": True, "x": 1}):
        await problem_of(await client.put(prefs, json=bad, headers=mail.auth("cora")), 422)
    _, allowed = await create_key(res.database, "prefs", ["account:preferences"])
    _, other = await create_key(res.database, "reader", ["photos:read"])
    as_bob = {"X-Darkroom-User": "bob"}
    off = {"email_notifications": False}
    resp = await client.put(
        prefs, json=off, headers={"Authorization": f"Bearer {allowed}"} | as_bob
    )
    assert resp.status == 200 and await resp.json() == off
    resp = await client.get(prefs, headers={"Authorization": f"Bearer {other}"} | as_bob)
    await problem_of(resp, 403)
    assert await mail.ok("bob", "GET", prefs) == off
    assert await mail.ok("cora", "GET", prefs) == {"email_notifications": True}


async def test_a_temporary_smtp_failure_is_retried_and_a_permanent_one_is_not(
    settings: Settings,
) -> None:
    catcher = FlakyCatcher("451 4.3.0 try again later", "421 4.7.0 busy")
    async for mail in _mailing(settings, catcher):
        await mail.ok("tess", "GET", "/v1/photos")
        [welcome] = await mail.catcher.wait_for(1)
        assert welcome.to == "tess@example.com" and catcher.refused == 2
        catcher.refusals = ["550 5.1.1 no such user"]
        await mail.ok("una", "GET", "/v1/photos")
        await parked(mail, 1)
        await mail.ok("vic", "GET", "/v1/photos")
        await mail.catcher.wait_for(2)
        assert catcher.refused == 3
        assert [m.to for m in mail.catcher.caught] == ["vic@example.com", "tess@example.com"]


async def sent(mail: Mailing, user: str, count: int) -> None:
    """Wait until the ledger records `count` mails sent to `user` (the catcher has a mail
    before the sender hears it was accepted)."""
    async with asyncio.timeout(30):
        while await mail.gw.res.mails.sent(user) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def parked(mail: Mailing, count: int) -> None:
    """Wait until the mail queue's dead-letter queue holds `count` messages."""
    res = mail.gw.res
    async with asyncio.timeout(30):
        while (await res.broker.backlog(res.topology.mail, [])).dead_letters < count:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_deleting_an_account_deletes_its_address_and_a_new_one_is_welcomed(
    mail: Mailing,
) -> None:
    await mail.ok("zoe", "GET", "/v1/photos")
    await sent(mail, "zoe", 1)
    await mail.ok("zoe", "DELETE", "/v1/me")
    assert await mail.gw.res.users.get("zoe") is None
    # Coming back is a first request again: a new account, recorded and welcomed anew.
    await mail.ok("zoe", "GET", "/v1/photos")
    await sent(mail, "zoe", 2)
    assert [m.subject for m in mail.to("zoe@example.com")] == ["Welcome to Darkroom"] * 2


@pytest.fixture(
    params=["embedded", pytest.param("real", marks=[pytest.mark.rabbitmq, pytest.mark.postgres])]
)
async def mail_on_both(
    request: pytest.FixtureRequest, settings: Settings
) -> AsyncIterator[Mailing]:
    """`mail` on the embedded broker and SQLite, then on RabbitMQ and PostgreSQL."""
    if request.param == "embedded":
        async for mailing in _mailing(settings, MailCatcher()):
            yield mailing
        return
    amqp_url = request.getfixturevalue("amqp_url")
    real = settings.model_copy(
        update={"broker_url": amqp_url, "database_url": request.getfixturevalue("postgres_url")}
    )
    try:
        async for mailing in _mailing(real, MailCatcher()):
            yield mailing
    finally:
        await delete_topology(amqp_url, Topology.from_settings(real))


async def test_a_user_deleted_through_one_replica_is_welcomed_back_through_another(
    mail_on_both: Mailing,
) -> None:
    mail = mail_on_both
    app = create_app(mail.gw.res.settings, resources=mail.gw.res)
    async with TestClient(TestServer(app)) as other:
        resp = await other.get("/v1/photos", headers=mail.auth("zoe"))
        assert resp.status == 200
        await sent(mail, "zoe", 1)
        await mail.ok("zoe", "DELETE", "/v1/me")
        # The other replica hears of the deletion as an event: until then it still takes
        # zoe for recorded.
        async with asyncio.timeout(30):
            while await mail.gw.res.users.get("zoe") is None:
                resp = await other.get("/v1/photos", headers=mail.auth("zoe"))
                assert resp.status == 200
                await asyncio.sleep(0.05)
    await sent(mail, "zoe", 2)
    assert [m.subject for m in mail.to("zoe@example.com")] == ["Welcome to Darkroom"] * 2


async def test_the_owner_of_a_disabled_webhook_endpoint_is_told(mail: Mailing) -> None:
    await mail.ok("wes", "GET", "/v1/photos")
    await sent(mail, "wes", 1)
    since = datetime(2026, 11, 25, 8, 30, tzinfo=UTC)
    disabled = WebhookDisabled(
        user_id="wes", webhook_id="wh_1", url="https://hooks.example.com/<x>", failing_since=since
    )
    res = mail.gw.res
    await publish_envelope(res.broker, res.topology, Envelope.wrap(disabled, trace_id="t"))
    await sent(mail, "wes", 2)
    [told] = [m for m in mail.to("wes@example.com") if "disabled" in m.subject]
    assert "“https://hooks.example.com/<x>”" in told.text and "2026-11-25 08:30 UTC" in told.text
    assert "https://hooks.example.com/&lt;x&gt;" in told.html

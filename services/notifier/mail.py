"""Mail to people: the notifier's handlers on its mail queue.

Two steps, both on `<p>.notifier.mail`. An event that mails someone (user.created,
album.member_added, album.revealed, webhook.disabled) is fanned out into one
mail.requested per recipient, under an id derived from the event and the recipient, so
a repeated fan-out requests the same mails. Each mail.requested is then one send, retried
on its own: the address and the preference are read at that moment, the mail is claimed
in the ledger (shared/users.py `Mails`), handed to the SMTP server and marked sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime

from shared.broker import publish_envelope
from shared.errors import TransientError
from shared.events import (
    AlbumMemberAdded,
    AlbumRevealed,
    Envelope,
    MailRequested,
    UserCreated,
    WebhookDisabled,
    mail_event_id,
)
from shared.logging import get_logger
from shared.mail import Letter, album_revealed, compose, member_added, message_id
from shared.mail import webhook_disabled as disabled_letter
from shared.mail import welcome as welcome_letter
from shared.resources import Resources
from shared.runtime import Meta, Route, on_events
from shared.smtp import MailNotSent, MailRefused, SmtpServer, send
from shared.users import Claim

log = get_logger(__name__)
Trigger = UserCreated | AlbumMemberAdded | AlbumRevealed | WebhookDisabled


class Mailer:
    def __init__(self, res: Resources) -> None:
        self.res = res
        url = res.settings.smtp_url.get_secret_value()
        self.server = SmtpServer.from_url(url) if url else None
        self.sender = res.settings.mail_from
        self.timeout = res.settings.smtp_timeout
        if self.server is None:
            log.info("mail is off: DARKROOM_SMTP_URL is not set")
        else:
            log.info("mail on", smtp_host=self.server.host, smtp_port=self.server.port)

    def routes(self) -> list[Route]:
        fan_out = self.fan_out
        return [
            on_events(
                self.res.topology.mail,
                {
                    UserCreated: fan_out,
                    AlbumMemberAdded: fan_out,
                    AlbumRevealed: fan_out,
                    WebhookDisabled: fan_out,
                    MailRequested: self.send,
                },
            )
        ]

    async def fan_out(self, event: Trigger, meta: Meta) -> None:
        if self.server is None:
            return
        recipients = await self.res.users.reachable(await self._audience(event))
        trigger = Envelope.wrap(event, trace_id=meta.trace_id, event_id=meta.event_id)
        for user_id in recipients:
            request = Envelope.wrap(
                MailRequested(user_id=user_id, trigger=trigger),
                trace_id=meta.trace_id,
                event_id=mail_event_id(meta.event_id, user_id),
            )
            await publish_envelope(self.res.broker, self.res.topology, request)
        log.info("mail requested", event_type=event.TYPE, recipients=len(recipients))

    async def _audience(self, event: Trigger) -> list[str]:
        if isinstance(event, AlbumRevealed):
            members = await self.res.albums.members(event.album_id)
            return [event.owner_id, *(m.user_id for m in members)]
        return [event.user_id]

    async def send(self, request: MailRequested, meta: Meta) -> None:
        if self.server is None:
            return
        trigger, user_id = request.trigger, request.user_id
        user = await self.res.users.get(user_id)
        if user is None or user.email is None or not user.email_notifications:
            log.info("mail not wanted", mail_type=trigger.type)
            return
        letter = await self._letter(trigger)
        if letter is None:
            return
        mails = self.res.mails
        mid = message_id(trigger.id, user_id, self.sender)
        # The send takes at most two timeouts (the mail, then the goodbye): the lease
        # outlasts it, so no other sender takes the mail over while this one may still send.
        claim = await mails.claim(trigger.id, user_id, mid, lease_s=3 * self.timeout)
        attempts = self.res.metrics.mails
        if claim is Claim.SENT:
            attempts.labels("duplicate").inc()
            log.info("mail already sent", mail_type=trigger.type, message_id=mid)
            return
        if claim is Claim.BUSY:
            raise MailNotSent("another sender holds this mail's claim; trying again later")
        message = compose(
            letter, sender=self.sender, to=user.email, message_id=mid, date=datetime.now(UTC)
        )
        try:
            await send(self.server, message, timeout=self.timeout)
        except Exception as exc:
            attempts.labels("refused" if isinstance(exc, MailRefused) else "failed").inc()
            await _quietly(mails.release(trigger.id, user_id))
            raise
        attempts.labels("sent").inc()
        # Sent: from here on, failing to record it must not send it again.
        await _quietly(asyncio.shield(mails.mark_sent(trigger.id, user_id)))
        log.info("mail sent", mail_type=trigger.type, message_id=mid, attempt=meta.attempt)

    async def _letter(self, trigger: Envelope) -> Letter | None:
        """What the mail says; None when what it is about is gone (an album deleted)."""
        if trigger.type == UserCreated.TYPE:
            return welcome_letter()
        if trigger.type == AlbumRevealed.TYPE:
            revealed = trigger.open(AlbumRevealed)
            return album_revealed(revealed.title, revealed.photo_count)
        if trigger.type == WebhookDisabled.TYPE:
            disabled = trigger.open(WebhookDisabled)
            return disabled_letter(disabled.url, disabled.failing_since)
        added = trigger.open(AlbumMemberAdded)
        album = await self.res.albums.get(added.album_id)
        if album is None:
            log.info("album gone before its mail was sent", album_id=added.album_id)
            return None
        return member_added(album.title, added.owner_id, added.role)


async def _quietly(step: Awaitable[None]) -> None:
    """Run a ledger update whose failure must not change the outcome of the send."""
    try:
        await step
    except TransientError as exc:
        log.warning("mail ledger not updated", error=str(exc))

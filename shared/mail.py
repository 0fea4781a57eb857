"""What Darkroom's mails say, and how each becomes a MIME message.

Each mail is a few paragraphs of plain text; the HTML part is made from the same
paragraphs, every one escaped, so text a user chose (an album's title) can never become
markup. Such text is also stripped of invisible characters and line breaks first, so it
cannot add headers to the Subject it appears in, nor reorder what it says with bidi
controls.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

from shared.events import mail_event_id
from shared.text import visible_text

MAX_QUOTED = 80  # characters of user-chosen text quoted in a subject or a sentence
FOOTER = (
    "You get this mail because your Darkroom account has this address. To stop all "
    'Darkroom mail, set "email_notifications" to false with PUT /v1/me/preferences.'
)


@dataclass(frozen=True)
class Letter:
    subject: str
    paragraphs: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n\n".join((*self.paragraphs, "--", FOOTER)) + "\n"

    @property
    def html(self) -> str:
        body = "".join(f"<p>{html.escape(p)}</p>\n" for p in self.paragraphs)
        return (
            '<!doctype html>\n<html><head><meta charset="utf-8">'
            f"<title>{html.escape(self.subject)}</title></head>\n"
            f'<body style="font-family:sans-serif;line-height:1.5">\n{body}'
            f'<hr><p style="color:#666;font-size:smaller">{html.escape(FOOTER)}</p>\n'
            "</body></html>\n"
        )


def quoted(text: str) -> str:
    """User-chosen text as one visible line, shortened, in quotation marks."""
    line = " ".join(visible_text(" ".join(text.splitlines())).split())
    if len(line) > MAX_QUOTED:
        line = line[: MAX_QUOTED - 1] + "…"
    return f"“{line}”"


def welcome() -> Letter:
    return Letter(
        "Welcome to Darkroom",
        (
            "Welcome! Your Darkroom account is ready.",
            "Upload photos and they are checked, rendered and ready to share within "
            "seconds. Albums with a reveal date stay sealed until their time comes, "
            "and we will tell you when one develops.",
        ),
    )


def member_added(title: str, owner_id: str, role: str) -> Letter:
    album, owner = quoted(title), quoted(owner_id)
    can = "add photos to it and see" if role == "contributor" else "see"
    return Letter(
        f"You were added to the album {album}",
        (
            f"{owner} added you to the album {album} as a {role}.",
            f"You can {can} its photos once it develops.",
        ),
    )


def album_revealed(title: str, photo_count: int) -> Letter:
    album = quoted(title)
    photos = "1 photo" if photo_count == 1 else f"{photo_count} photos"
    return Letter(
        f"Your album {album} has developed",
        (
            f"The album {album} has developed: its {photos} can be seen now.",
            "Open it in your app to look at them.",
        ),
    )


def webhook_disabled(url: str, failing_since: datetime) -> Letter:
    endpoint = quoted(url)
    since = failing_since.strftime("%Y-%m-%d %H:%M UTC")
    return Letter(
        "Your webhook endpoint was disabled",
        (
            f"Deliveries to your webhook endpoint {endpoint} have failed since {since}, "
            "so it was disabled and receives no more events.",
            "Fix the receiver, then replay the failed deliveries and create the endpoint "
            "again through the API (/v1/webhooks).",
        ),
    )


def message_id(trigger_id: str, user_id: str, sender: str) -> str:
    """The same for every attempt at one mail, so a resent copy is recognisable."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "darkroom.invalid"
    return f"<{mail_event_id(trigger_id, user_id)}@{domain}>"


def compose(
    letter: Letter, *, sender: str, to: str, message_id: str, date: datetime
) -> EmailMessage:
    """A multipart/alternative message: the plain text first, the HTML preferred."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = letter.subject
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies, please
    message.set_content(letter.text)
    message.add_alternative(letter.html, subtype="html")
    return message

"""A Server-Sent Events reader for tests, after the HTML standard's parsing rules: fields
`event`, `data` (lines joined with newlines), `id`; comment lines; a blank line ends a
message, which is dispatched only when it has data."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass(frozen=True)
class Message:
    event: str
    data: str
    id: str | None  # the id field of this message, if it had one

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass(frozen=True)
class Comment:
    text: str


class SseReader:
    """Reads an open `text/event-stream` response message by message."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        assert response.status == 200, response.status
        assert response.content_type == "text/event-stream", response.content_type
        self.response = response
        self.last_event_id: str | None = None  # as a browser would resend it
        self.comments: list[str] = []

    async def item(self, timeout: float = 30) -> Message | Comment | None:
        """The next message or comment; None when the stream has ended."""
        async with asyncio.timeout(timeout):
            event, event_id = "", None
            data: list[str] = []
            while True:
                raw = await self.response.content.readline()
                if not raw:
                    return None
                line = raw.decode().rstrip("\r\n")
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                    return Comment(line[1:].strip())
                if not line:
                    if not data:
                        event, event_id = "", None
                        continue
                    return Message(event or "message", "\n".join(data), event_id)
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "event":
                    event = value
                elif name == "data":
                    data.append(value)
                elif name == "id" and "\0" not in value:
                    event_id = self.last_event_id = value

    async def message(self, timeout: float = 30) -> Message:
        """The next message, skipping comments; fails if the stream ends first."""
        while True:
            item = await self.item(timeout)
            assert item is not None, "the stream ended"
            if isinstance(item, Message):
                return item

    async def comment(self, timeout: float = 30) -> str:
        """The next comment, skipping messages; fails if the stream ends first."""
        while True:
            item = await self.item(timeout)
            assert item is not None, "the stream ended"
            if isinstance(item, Comment):
                return item.text

    async def ended(self, timeout: float = 30) -> bool:
        """True once the server has ended the stream (messages meanwhile are skipped)."""
        while (await self.item(timeout)) is not None:
            pass
        return True

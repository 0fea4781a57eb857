"""Live events: each gateway replica's share of the events exchange, fanned out to the
Server-Sent Events streams connected to it (services/gateway/events_stream.py).

Every replica consumes every live event through a queue of its own (gone with the
replica: `Topology.live_events`, `Broker.listen`), decides once per event who may see it, keeps the
recent ones in a bounded ring for `Last-Event-ID` resumes, and hands each to the streams
of the users allowed. Who sees what:

- photo.ready, photo.rejected, photo.deleted: the photo's uploader only. Album members
  learn of others' photos from album.revealed and the listings, so a sealed album's
  photos tell them nothing early.
- album.revealed, album.member_added: the owner and every member, from the database when
  the event arrives (a member removed since is not told).
- album.deleted: the owner and the members the event names (the records are gone).

account.deleted comes the same way to no stream: each replica forgets the user it had
recorded (services/gateway/known_users.py), as the one that deleted the account did; a
replica that may have missed events (not yet listening, or cut off) forgets them all.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.gateway.known_users import KnownUsers
from shared.broker import Delivery, Subscription
from shared.errors import BrokerUnavailable, InvalidMessage, TransientError
from shared.events import (
    USER_EVENTS,
    AccountDeleted,
    AlbumDeleted,
    AlbumMemberAdded,
    AlbumRevealed,
    Envelope,
    Event,
    PhotoDeleted,
    PhotoReady,
    PhotoRejected,
)
from shared.logging import get_logger
from shared.resources import Resources

log = get_logger(__name__)

# Frames a stream may have waiting before it counts as fallen behind (then: a reset).
STREAM_BACKLOG = 1000


class LivePayload(BaseModel):
    """An SSE message's `data`: what a webhook receiver gets for the same event."""

    model_config = ConfigDict(frozen=True)
    type: str
    timestamp: datetime = Field(description="when the event happened")
    data: dict[str, Any]


class StreamReset(BaseModel):
    """An `event: reset` message's `data`: events may have been missed; list again."""

    model_config = ConfigDict(frozen=True)
    reason: Literal["unknown_last_event_id", "fell_behind", "events_interrupted"]
    detail: str


class TooManyStreams(Exception):
    """The user has as many streams open on this replica as it allows."""


@dataclass(frozen=True)
class _Recent:
    seq: int
    id: str
    audience: frozenset[str]
    frame: bytes
    received: float  # monotonic


def message(event_id: str | None, event_type: str, data: str) -> bytes:
    """One SSE message; `data` is a single line (JSON without newlines)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event_type}\ndata: {data}\n\n".encode()


def reset_frame(reason: str, detail: str, resume_from: str | None) -> bytes:
    body = StreamReset.model_validate({"reason": reason, "detail": detail})
    return message(resume_from, "reset", body.model_dump_json())


class Stream:
    """One connected client: frames waiting to be written, and a bell to wake its writer."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.closed = False
        self._frames: deque[bytes] = deque()
        self._bell = asyncio.Event()

    def push(self, frame: bytes, resume_from: str | None = None) -> bool:
        """Queue `frame`; False if the stream had fallen behind and gets a reset instead."""
        kept = len(self._frames) < STREAM_BACKLOG
        if not kept:
            # A client that does not read must not hold the replica's memory: drop what
            # it has not read and tell it to list again.
            self._frames.clear()
            frame = reset_frame("fell_behind", "the stream fell behind", resume_from)
        self._frames.append(frame)
        self._bell.set()
        return kept

    def close(self) -> None:
        self.closed = True
        self._bell.set()

    async def wait(self, timeout: float) -> list[bytes]:
        """Frames to write, once there are some or the stream closes; [] on timeout."""
        if not self._frames and not self.closed:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._bell.wait(), timeout)
        self._bell.clear()
        frames = list(self._frames)
        self._frames.clear()
        return frames


class LiveHub:
    def __init__(self, res: Resources, known: KnownUsers) -> None:
        """`known`: this replica's recorded users, told of each account deleted through
        any replica, and of every stretch in which it may have missed one."""
        self._res = res
        self._known = known
        self._metrics = res.metrics
        settings = res.settings
        self._cap = settings.events_max_streams_per_user
        self._window_s = settings.events_replay_seconds
        self._ring: deque[_Recent] = deque(maxlen=settings.events_replay_events)
        self._seq_of: dict[str, int] = {}
        self._next_seq = 0
        self._streams: dict[str, set[Stream]] = {}
        self._inbox: asyncio.Queue[Delivery] = asyncio.Queue()
        self.queue = res.topology.live_events(uuid.uuid4().hex[:16])
        self._subscription: Subscription | None = None

    @property
    def listening(self) -> bool:
        """Consuming this replica's queue (after a reconnect, again: aio-pika restores it)."""
        return self._subscription is not None and self._res.broker.is_ready

    # --- streams ---

    def open(self, user: str, last_event_id: str | None) -> Stream:
        """A stream for `user`, holding what it missed after `last_event_id` (or a reset
        when this replica does not know that id any more). Synchronous on purpose:
        nothing can arrive between the replay and the registration."""
        mine = self._streams.setdefault(user, set())
        if len(mine) >= self._cap:
            raise TooManyStreams(f"{len(mine)} streams open for this user")
        self._expire()
        stream = Stream(user)
        if last_event_id is not None:
            for frame in self._missed(user, last_event_id):
                stream.push(frame)
        mine.add(stream)
        self._metrics.event_streams.set(self.stream_count())
        return stream

    def _missed(self, user: str, last_event_id: str) -> Iterable[bytes]:
        seq = self._seq_of.get(last_event_id)
        if seq is None:
            newest = self._ring[-1].id if self._ring else None
            detail = "the last event id is older than this server's window, or unknown"
            self._metrics.event_stream_resets.labels("unknown_last_event_id").inc()
            return [reset_frame("unknown_last_event_id", detail, newest)]
        start = seq - self._ring[0].seq + 1
        return [e.frame for e in list(self._ring)[start:] if user in e.audience]

    def close(self, stream: Stream) -> None:
        stream.close()
        mine = self._streams.get(stream.user)
        if mine is not None:
            mine.discard(stream)
            if not mine:
                del self._streams[stream.user]
        self._metrics.event_streams.set(self.stream_count())

    def close_all(self) -> None:
        """Shutting down: every stream's writer returns at once, so the drain is quick."""
        for mine in self._streams.values():
            for stream in mine:
                stream.close()

    def stream_count(self) -> int:
        return sum(len(mine) for mine in self._streams.values())

    # --- events ---

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        pump = asyncio.create_task(self._pump(), name="live-events")
        listening = asyncio.create_task(self._listen(), name="live-listen")
        try:
            yield
        finally:
            for task in (listening, pump):
                task.cancel()
            await asyncio.gather(listening, pump, return_exceptions=True)
            if self._subscription is not None:
                with suppress(TransientError):
                    await self._subscription.cancel()
                self._subscription = None

    async def _listen(self) -> None:
        """Consume the replica's queue, once the broker is there (the gateway starts
        without it); aio-pika's robust connection keeps it after that."""
        delay = 0.2
        while True:
            try:
                self._subscription = await self._res.broker.listen(
                    self.queue, self._inbox_put, self._gap
                )
            except BrokerUnavailable as exc:
                log.debug("live events wait for the broker", error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            # Users recorded before now may have been deleted through another replica.
            self._known.forget_all()
            log.info("live events listening", queue=self.queue.name)
            return

    def _gap(self) -> None:
        """Events sent while the broker connection was down never reached this replica:
        its window would replay with holes, so it starts over, and its streams are told."""
        self._ring.clear()
        self._seq_of.clear()
        self._known.forget_all()  # an account.deleted may have been among them
        detail = "this server lost its broker connection for a while"
        frame = reset_frame("events_interrupted", detail, None)
        for mine in self._streams.values():
            for stream in mine:
                stream.push(frame)
        count = self.stream_count()
        self._metrics.event_stream_resets.labels("events_interrupted").inc(count)
        log.warning("live events interrupted", streams=count)

    async def _inbox_put(self, delivery: Delivery) -> None:
        # One at a time, in arrival order: the broker may run callbacks concurrently.
        self._inbox.put_nowait(delivery)

    async def _pump(self) -> None:
        while True:
            delivery = await self._inbox.get()
            try:
                await self.deliver(Envelope.from_bytes(delivery.message.body))
            except InvalidMessage as exc:
                log.warning("live event skipped", error=str(exc))
            except Exception:
                log.exception("live event failed")
            # Live streams are at most once: nothing to retry for a stream that missed it.
            await delivery.ack()

    async def deliver(self, envelope: Envelope) -> None:
        """Record `envelope` and hand it to the streams of those who may see it."""
        if envelope.type == AccountDeleted.TYPE:
            # The replica that deleted it forgot the user; this one must too, or a
            # returning user's address goes unrecorded here (services/gateway/known_users.py).
            self._known.forget(envelope.open(AccountDeleted).owner_id)
            return
        if envelope.id in self._seq_of:
            return  # a re-publish (outbox relay) of an event already sent
        audience = await self._audience(envelope)
        payload = LivePayload(type=envelope.type, timestamp=envelope.time, data=envelope.data)
        frame = message(envelope.id, envelope.type, payload.model_dump_json())
        self._remember(envelope.id, audience, frame)
        for user in audience:
            for stream in self._streams.get(user, ()):
                if not stream.push(frame, envelope.id):
                    self._metrics.event_stream_resets.labels("fell_behind").inc()

    def _remember(self, event_id: str, audience: frozenset[str], frame: bytes) -> None:
        self._expire()
        if len(self._ring) == self._ring.maxlen:
            del self._seq_of[self._ring[0].id]
        self._ring.append(_Recent(self._next_seq, event_id, audience, frame, time.monotonic()))
        self._seq_of[event_id] = self._next_seq
        self._next_seq += 1

    def _expire(self) -> None:
        oldest = time.monotonic() - self._window_s
        while self._ring and self._ring[0].received < oldest:
            del self._seq_of[self._ring.popleft().id]

    async def _audience(self, envelope: Envelope) -> frozenset[str]:
        model = _MODELS.get(envelope.type)
        if model is None:
            raise InvalidMessage(f"{envelope.type} is not a live event")
        event = envelope.open(model)
        if isinstance(event, PhotoReady | PhotoRejected | PhotoDeleted):
            return frozenset({event.owner_id})
        if isinstance(event, AlbumDeleted):
            return frozenset({event.owner_id, *event.member_ids})
        assert isinstance(event, AlbumRevealed | AlbumMemberAdded)
        known = {event.owner_id, *_also(event)}
        try:
            members = await self._res.albums.members(event.album_id)
        except TransientError as exc:
            # The owner (and a new member) are in the event; the rest must wait for
            # their next listing rather than hold up every stream.
            log.warning("album members unavailable", album_id=event.album_id, error=str(exc))
            members = []
        return frozenset(known | {m.user_id for m in members})


def _also(event: AlbumRevealed | AlbumMemberAdded) -> tuple[str, ...]:
    return (event.user_id,) if isinstance(event, AlbumMemberAdded) else ()


_MODELS: dict[str, type[Event]] = {model.TYPE: model for model in USER_EVENTS}

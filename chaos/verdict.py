"""Waiting for every photo to be final, and the figures."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

from chaos.load import Client, Upload
from chaos.webhooks import Receiver

READY, REJECTED = "photo.ready", "photo.rejected"
FINAL_EVENT = {"ready": READY, "rejected": REJECTED}
QUIET_S = 6.0  # after all are final: time for late duplicate webhooks to show up


@dataclass
class Outcome:
    status: str = "unknown"  # from GET /v1/photos/{id}
    reason: str = ""
    announced: dict[str, int] = field(default_factory=dict)  # event type -> distinct ids

    @property
    def final(self) -> bool:
        """Final: the API shows ready or rejected and the matching webhook arrived."""
        event = FINAL_EVENT.get(self.status)
        return event is not None and self.announced.get(event, 0) > 0

    @property
    def duplicated(self) -> bool:
        return len(self.announced) > 1 or any(n > 1 for n in self.announced.values())


async def observe(client: Client, receiver: Receiver, upload: Upload, outcome: Outcome) -> None:
    if upload.photo_id and outcome.status not in FINAL_EVENT:
        view = await client.photo(upload)
        if view is not None:
            outcome.status = str(view["status"])
            outcome.reason = str(view.get("reason") or "")
    announced = receiver.announced(upload.photo_id) if upload.photo_id else {}
    outcome.announced = {event: len(ids) for event, ids in announced.items()}


async def observe_all(
    client: Client, receiver: Receiver, uploads: list[Upload], outcomes: list[Outcome]
) -> None:
    slots = asyncio.Semaphore(16)

    async def one(upload: Upload, outcome: Outcome) -> None:
        async with slots:
            await observe(client, receiver, upload, outcome)

    await asyncio.gather(*(one(u, o) for u, o in zip(uploads, outcomes, strict=True)))


async def settle(
    client: Client, receiver: Receiver, uploads: list[Upload], timeout_s: float
) -> list[Outcome]:
    """Poll until every photo is final (then a quiet period) or the deadline passes."""
    outcomes = [Outcome() for _ in uploads]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        await observe_all(client, receiver, uploads, outcomes)
        if all(o.final for o in outcomes):
            await asyncio.sleep(min(QUIET_S, max(0.0, deadline - loop.time())))
            break
        await asyncio.sleep(1.0)
    await observe_all(client, receiver, uploads, outcomes)
    return outcomes


@dataclass(frozen=True)
class Figures:
    uploads: int
    faults: int
    lost: int
    duplicated: int
    stuck: int
    wrongly_accepted: int
    wrongly_rejected: int
    # Users' endpoints: ready photos whose photo.ready their owner's endpoint never
    # acknowledged, and those it acknowledged more than once (see chaos.webhooks).
    endpoint_missed: int = 0
    endpoint_repeated: int = 0

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.duplicated
            or self.stuck
            or self.wrongly_accepted
            or self.wrongly_rejected
            or self.endpoint_missed
            or self.endpoint_repeated
        )

    def line(self) -> str:
        return (
            f"chaos: uploads={self.uploads} faults={self.faults} lost={self.lost} "
            f"duplicated={self.duplicated} stuck={self.stuck} "
            f"wrongly_accepted={self.wrongly_accepted} wrongly_rejected={self.wrongly_rejected} "
            f"endpoint_missed={self.endpoint_missed} endpoint_repeated={self.endpoint_repeated}"
        )


def figures(uploads: list[Upload], outcomes: list[Outcome], faults: int) -> Figures:
    pairs = list(zip(uploads, outcomes, strict=True))
    return Figures(
        uploads=len(uploads),
        faults=faults,
        lost=sum(1 for u, o in pairs if u.sample.valid and not (o.final and o.status == "ready")),
        duplicated=sum(1 for _, o in pairs if o.duplicated),
        stuck=sum(1 for _, o in pairs if not o.final),
        wrongly_accepted=sum(1 for u, o in pairs if not u.sample.valid and o.status == "ready"),
        wrongly_rejected=sum(1 for u, o in pairs if u.sample.valid and o.status == "rejected"),
    )


def problems(uploads: list[Upload], outcomes: list[Outcome]) -> list[str]:
    """One line per photo that counts against the run, for the operator."""
    lines = []
    for u, o in zip(uploads, outcomes, strict=True):
        wrong = (u.sample.valid and o.status != "ready") or (
            not u.sample.valid and o.status != "rejected"
        )
        if wrong or not o.final or o.duplicated or u.failure:
            lines.append(
                f"  photo={u.photo_id or '-'} kind={u.sample.kind!r} valid={u.sample.valid} "
                f"status={o.status} reason={o.reason or '-'} webhooks={o.announced} "
                f"uploaded={u.uploaded} failure={u.failure or '-'}"
            )
    return lines


def reasons(uploads: list[Upload], outcomes: list[Outcome]) -> Counter[str]:
    return Counter(
        f"{u.sample.kind}->{o.reason or o.status}"
        for u, o in zip(uploads, outcomes, strict=True)
        if not u.sample.valid
    )

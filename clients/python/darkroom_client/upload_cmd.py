"""`darkroom-client upload PATH...`: every accepted image under the paths, with progress
bars, a pending list that lets a later run resume, and a table of outcomes."""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from darkroom_client.client import Client
from darkroom_client.errors import DarkroomError, NotFound, Rejected
from darkroom_client.models import ACCEPTED_TYPES, Photo, UploadState
from darkroom_client.source import Source
from darkroom_client.state import Pending, state_path
from darkroom_client.uploads import Outcome

SUFFIXES = {s for suffixes in ACCEPTED_TYPES.values() for s in suffixes}
HASHING = 2  # files hashed at a time


@dataclass
class Row:
    file: Path
    status: str  # ready, rejected or failed
    detail: str
    photo_id: str | None = None


def collect(paths: list[Path]) -> list[Path]:
    """Files named, and accepted images under folders named (hidden ones left out)."""
    found: dict[Path, None] = {}
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                hidden = any(p.startswith(".") for p in child.relative_to(path).parts)
                if child.is_file() and not hidden and child.suffix.lower() in SUFFIXES:
                    found[child] = None
        else:
            found[path] = None
    return list(found)


class Board:
    """The progress bars: overall bytes, and one bar per file while it is sent."""

    def __init__(self, progress: Progress, sources: list[Source]) -> None:
        self.progress = progress
        self.sources = sources
        self.sent = [0] * len(sources)
        self.bars: dict[int, TaskID] = {}
        total = sum(s.size for s in sources)
        self.overall = progress.add_task("[bold]all files", total=total)

    def update(self, index: int, sent: int, total: int) -> None:
        if index not in self.bars:
            name = self.sources[index].filename
            self.bars[index] = self.progress.add_task(name[:40], total=total)
        self.sent[index] = sent
        self.progress.update(self.bars[index], completed=sent)
        self.progress.update(self.overall, completed=sum(self.sent))

    def verifying(self, index: int) -> None:
        if index in self.bars:
            name = self.sources[index].filename[:28]
            self.progress.update(self.bars[index], description=f"{name} (verifying)")

    def done(self, index: int) -> None:
        self.update(index, self.sources[index].size, self.sources[index].size)
        self.progress.remove_task(self.bars.pop(index))


async def run_upload(args: argparse.Namespace, out: Console) -> int:
    files = collect(args.paths)
    pending = Pending.load(args.state or state_path())
    rows: dict[int, Row] = {}
    err = Console(stderr=True)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=args.no_progress,
        transient=True,
    )
    with progress:
        sources = await _hash(files, rows)
        board = Board(progress, [s for s in sources if s is not None])
        known = {i: s for i, s in enumerate(sources) if s is not None}
        async with Client(args.url, args.token) as client:
            run = _Run(client, args, pending, board, rows, known)
            await run.all()
    _report(out, [rows[i] for i in sorted(rows)], args.json)
    statuses = {row.status for row in rows.values()}
    return 1 if "failed" in statuses else 2 if "rejected" in statuses else 0


async def _hash(files: list[Path], rows: dict[int, Row]) -> list[Source | None]:
    limit = asyncio.Semaphore(HASHING)

    async def one(index: int, file: Path) -> Source | None:
        async with limit:
            try:
                source = await Source.of(file)
            except OSError as exc:
                rows[index] = Row(file, "failed", exc.strerror or str(exc))
                return None
        if source.content_type not in ACCEPTED_TYPES:
            rows[index] = Row(file, "failed", "not an accepted image type")
            return None
        return source

    return list(await asyncio.gather(*(one(i, f) for i, f in enumerate(files))))


class _Run:
    def __init__(
        self,
        client: Client,
        args: argparse.Namespace,
        pending: Pending,
        board: Board,
        rows: dict[int, Row],
        sources: dict[int, Source],
    ) -> None:
        self.client, self.args, self.pending = client, args, pending
        self.board, self.rows, self.sources = board, rows, sources
        self.limit = asyncio.Semaphore(max(1, args.concurrency))

    async def all(self) -> None:
        """Uploads the pending list knows resume; the others are granted in batches."""
        known = [i for i, s in self.sources.items() if s.sha256 in self.pending.entries]
        fresh = [i for i in self.sources if i not in known]
        await asyncio.gather(*(self._resume(i) for i in known), self._fresh(fresh))

    async def _resume(self, index: int) -> None:
        source = self.sources[index]
        async with self.limit:
            try:
                photo_id = self.pending.sent(source.sha256)
                if photo_id is not None:
                    try:
                        photo = await self.client.wait(photo_id)
                        self.finish(index, Outcome(source, photo=photo))
                        return
                    except NotFound:
                        pass  # gone (deleted or lapsed): upload it again
                photo = await self.client.upload(
                    source.path or source.data or b"",
                    self.args.album,
                    filename=source.filename,
                    content_type=source.content_type,
                    resume=self.pending.resumable(source.sha256),
                    progress=lambda sent, total: self.board.update(index, sent, total),
                    on_state=lambda state: self._keep(index, state),
                    on_sent=lambda photo_id: self._sent(index, photo_id),
                )
                self.finish(index, Outcome(source, photo=photo))
            except DarkroomError as exc:
                self.finish(index, Outcome(source, error=exc))

    async def _fresh(self, indexes: list[int]) -> None:
        if not indexes:
            return
        await self.client.upload_many(
            [self.sources[i] for i in indexes],
            self.args.album,
            concurrency=max(1, self.args.concurrency),
            progress=lambda n, sent, total: self.board.update(indexes[n], sent, total),
            on_state=lambda n, state: self._keep(indexes[n], state),
            on_sent=lambda n, photo_id: self._sent(indexes[n], photo_id),
            on_outcome=lambda n, outcome: self.finish(indexes[n], outcome),
        )

    def _keep(self, index: int, state: UploadState) -> None:
        self.pending.keep_state(self._file(index), state)

    def _sent(self, index: int, photo_id: str) -> None:
        self.pending.mark_sent(self._file(index), self.sources[index].sha256, photo_id)
        self.board.verifying(index)

    def _file(self, index: int) -> Path:
        return (self.sources[index].path or Path(self.sources[index].filename)).resolve()

    def finish(self, index: int, outcome: Outcome) -> None:
        source = outcome.source
        file = source.path or Path(source.filename)
        if index in self.board.bars:
            self.board.done(index)
        if outcome.photo is not None:
            self.pending.forget(source.sha256)
            self.rows[index] = Row(file, "ready", _ready(outcome.photo), outcome.photo.id)
        elif isinstance(outcome.error, Rejected):
            self.pending.forget(source.sha256)
            error = outcome.error
            self.rows[index] = Row(file, "rejected", _reason(error), error.photo_id)
        else:
            self.rows[index] = Row(file, "failed", str(outcome.error))


def _ready(photo: Photo) -> str:
    return "already uploaded" if photo.duplicate else ""


def _reason(error: Rejected) -> str:
    detail = error.detail if error.detail != error.reason else ""
    return f"{error.reason}: {detail}" if detail else error.reason


def _report(out: Console, rows: list[Row], as_json: bool) -> None:
    if as_json:
        for row in rows:
            record = {"file": str(row.file), "status": row.status, "photo_id": row.photo_id}
            print(json.dumps({**record, "detail": row.detail}, sort_keys=True))
        return
    counts = {s: sum(r.status == s for r in rows) for s in ("ready", "rejected", "failed")}
    title = ", ".join(f"{n} {s}" for s, n in counts.items())
    table = Table(title=title)
    table.add_column("file", overflow="fold")
    table.add_column("status", no_wrap=True)
    table.add_column("photo", no_wrap=True, min_width=32)  # ids are for copying: never cut
    table.add_column("detail", overflow="fold")
    style = {"ready": "green", "rejected": "yellow", "failed": "red"}
    for row in rows:
        status = f"[{style[row.status]}]{row.status}[/]"
        table.add_row(str(row.file), status, row.photo_id or "", row.detail)
    out.print(table)

"""One chaos run, start to finish, bounded in time; the last line printed is the verdict."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from chaos import corpus, faults, fleet, load, servers, verdict
from chaos.config import ChaosConfig, load_config
from chaos.stage import (
    ENDPOINTS_SETTLE_S,
    FAULT_TAIL_S,
    USERS,
    Stage,
    say,
    started,
)
from chaos.webhooks import endpoints_settled, subscribe
from services.gateway.auth import issue_token


def plan_uploads(stage: Stage) -> list[load.Upload]:
    users = [f"chaos-user-{i}" for i in range(USERS)]
    samples = corpus.build(stage.config.uploads, stage.config.invalid_fraction, stage.rng)
    return [load.Upload(i, s, users[i % USERS]) for i, s in enumerate(samples)]


async def under_faults(stage: Stage, uploads: list[load.Upload]) -> None:
    """The load, with faults running beside it; the faults stop soon after the load."""
    config = stage.config
    client = load.Client(stage.http, stage.services["gateway"].base_url, tokens(stage))
    events = faults.StorageEvents(
        stage.admin,
        stage.bucket,
        stage.tally,
        stage.rng,
        duplicate_rate=config.duplicate_rate,
        early_rate=config.early_rate,
    )
    load_s = config.load_s
    killing = asyncio.create_task(
        faults.killer(
            stage.http,
            stage.admin,
            stage.services,
            stage.tally,
            kills_per_worker=config.kills_per_worker,
            database_url=stage.database_url,
            interval_s=load_s / (len(fleet.WORKERS) * config.kills_per_worker + 1),
            rng=stage.rng,
        )
    )
    cutting = asyncio.create_task(
        faults.broker_cutter(
            stage.broker_proxy, stage.tally, every_s=config.broker_cut_every_s, rng=stage.rng
        )
    )
    restarter = faults.Restarter(
        stage.rabbit,
        stage.postgres,
        faults.plan_restarts(config.broker_restarts, config.database_restarts, stage.rng),
        stage.tally,
        stage.rng,
        say,
    )
    restarting = asyncio.create_task(restarter.run(load_s))
    try:
        await load.run_load(
            client,
            uploads,
            rate=config.upload_rate,
            concurrency=config.client_concurrency,
            rng=stage.rng,
            before=events.before_upload,
            after=events.after_upload,
        )
        say("load done; faults winding down")
        done, _ = await asyncio.wait({killing, restarting}, timeout=FAULT_TAIL_S)
        for task in done:
            task.result()  # a fault that broke breaks the run
        await events.finish()
    finally:
        restarter.stop()
        for task in (killing, cutting):
            task.cancel()
        await asyncio.gather(killing, cutting, return_exceptions=True)
        stage.broker_proxy.refusing = False
        stage.s3_proxy.faults.calm()
        # A restart under way finishes (never leave a server down); a server that would
        # not come back fails the run here.
        await restarting


def client_of(stage: Stage) -> load.Client:
    return load.Client(stage.http, stage.services["gateway"].base_url, tokens(stage))


def tokens(stage: Stage) -> dict[str, str]:
    users = {f"chaos-user-{i}" for i in range(USERS)}
    return {user: issue_token(stage.jwt_secret, user) for user in users}


async def revive(stage: Stage) -> None:
    """A kill interrupted by the end of the fault phase may leave a worker down."""
    for service in stage.services.values():
        if not service.running:
            await fleet.ensure_up(service, stage.http, stage.tally)
        service.expected_down = False


def fault_count(tally: Counter[str]) -> int:
    counted = (
        "sigkill_",
        "broker_cut",
        "broker_restart",
        "database_restart",
        "s3_",
        "storage_event_",
    )
    return sum(
        n
        for name, n in tally.items()
        if name.startswith(counted) and name != "broker_sockets_cut" and "failed" not in name
    )


def report(
    stage: Stage,
    uploads: list[load.Upload],
    outcomes: list[verdict.Outcome],
    endpoints: tuple[int, int],
) -> verdict.Figures:
    figures = verdict.figures(uploads, outcomes, fault_count(stage.tally))
    figures = dataclasses.replace(
        figures, endpoint_missed=endpoints[0], endpoint_repeated=endpoints[1]
    )
    say("faults: " + ", ".join(f"{k}={v}" for k, v in sorted(stage.tally.items())))
    say("webhooks: " + ", ".join(f"{k}={v}" for k, v in sorted(stage.receiver.tally.items())))
    say(
        "users' endpoints: "
        + ", ".join(f"{k}={v}" for k, v in sorted(stage.subscribers.tally.items()))
    )
    say(
        "invalid uploads: "
        + ", ".join(f"{k}={v}" for k, v in sorted(verdict.reasons(uploads, outcomes).items()))
    )
    restarts = {name: s.starts - 1 for name, s in stage.services.items()}
    say(f"restarts: {restarts}")
    for line in verdict.problems(uploads, outcomes)[:50]:
        say(line)
    return figures


async def chaos(config: ChaosConfig, log_dir: Path) -> verdict.Figures:
    started_at = time.monotonic()
    async with started(config, log_dir) as stage:
        say(f"{config.uploads} uploads at {config.upload_rate:.1f}/s, seed {config.seed}")
        uploads = plan_uploads(stage)
        await subscribe(client_of(stage), stage.subscribers, sorted(tokens(stage)))
        await under_faults(stage, uploads)
        await revive(stage)
        say(
            f"settling (at most {config.settle_timeout_s:.0f}s),"
            f" {time.monotonic() - started_at:.0f}s in"
        )
        client = load.Client(stage.http, stage.services["gateway"].base_url, tokens(stage))
        outcomes = await verdict.settle(client, stage.receiver, uploads, config.settle_timeout_s)
        ready = {
            u.photo_id: u.user
            for u, o in zip(uploads, outcomes, strict=True)
            if u.photo_id and o.status == "ready"
        }
        notifier_kills = stage.services["notifier"].kills
        endpoints = await endpoints_settled(
            stage.subscribers, ready, ENDPOINTS_SETTLE_S, notifier_kills
        )
        for repeat in stage.subscribers.repeated(ready, notifier_kills):
            say(f"endpoint repeated: {repeat}; notifier killed at {notifier_kills}")
        figures = report(stage, uploads, outcomes, endpoints)
    say(f"took {time.monotonic() - started_at:.0f}s")
    return figures


async def bounded(config: ChaosConfig, log_dir: Path) -> verdict.Figures:
    async with asyncio.timeout(config.run_timeout_s):
        return await chaos(config, log_dir)


def main(argv: list[str] | None = None) -> None:
    config = load_config(argv)
    missing = servers.available()
    if missing:
        # The run restarts a RabbitMQ node and a PostgreSQL cluster of its own; without
        # them it would not inject what it is for, so it fails rather than skip them.
        say(
            "cannot run: the broker and database restarts need RabbitMQ and PostgreSQL"
            f" servers of the run's own, and this machine lacks {'; '.join(missing)}"
            " (point DARKROOM_TEST_RABBITMQ_SERVER at the rabbitmq-server script; put"
            " initdb and postgres on PATH)"
        )
        print(_failed_line(config), flush=True)
        sys.exit(1)
    log_dir = Path(tempfile.mkdtemp(prefix="darkroom-chaos-"))
    # The run's own clients (aio-pika's reconnects while the node restarts) log to a file,
    # not over the run's output.
    logging.basicConfig(
        filename=log_dir / "chaos.log",
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    figures: verdict.Figures | None = None
    try:
        figures = asyncio.run(bounded(config, log_dir))
    except Exception as exc:  # the verdict line must still come out
        say(f"run failed: {exc!r}; logs in {log_dir}")
    ok = figures is not None and figures.ok
    if ok and not config.keep_logs:
        shutil.rmtree(log_dir, ignore_errors=True)
    else:
        say(f"logs kept in {log_dir}")
    line = figures.line() if figures else _failed_line(config)
    print(line, flush=True)
    sys.exit(0 if ok else 1)


def _failed_line(config: ChaosConfig) -> str:
    """The run itself broke: everything counts as stuck, so the line still fails CI."""
    return verdict.Figures(config.uploads, 0, 0, 0, config.uploads, 0, 0).line()

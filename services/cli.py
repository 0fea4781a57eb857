"""The `darkroom` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import Any

from shared.errors import BrokerUnavailable, ConfigurationError
from shared.service import load_settings


def _serve(name: str) -> None:
    from shared.service import run_process

    if name == "gateway":
        from services.gateway.service import standalone
    elif name == "ingest-worker":
        from services.ingest_worker.service import standalone
    elif name == "thumbnail-worker":
        from services.thumbnail_worker.service import standalone
    elif name == "notifier":
        from services.notifier.service import standalone
    else:
        from services.dev import run_dev as standalone
    run_process(standalone)


def _token(args: argparse.Namespace) -> None:
    from services.dev import dev_secret
    from services.gateway.auth import issue_token, require_secret

    settings = load_settings()
    secret = require_secret(dev_secret(settings))
    ttl = args.ttl or settings.auth_max_token_lifetime
    if ttl > settings.auth_max_token_lifetime:
        raise ConfigurationError(
            f"--ttl {ttl} exceeds DARKROOM_AUTH_MAX_TOKEN_LIFETIME "
            f"({settings.auth_max_token_lifetime} s): the gateway would refuse the token"
        )
    print(issue_token(secret, args.user, ttl_s=ttl))


async def _dlq(args: argparse.Namespace) -> None:
    from aiormq.exceptions import AMQPError

    from services.dev import redact_url
    from shared.dlq import DeadLetters, resolve
    from shared.topology import Topology

    settings = load_settings()
    if not settings.broker_url:
        raise ConfigurationError("darkroom dlq needs DARKROOM_BROKER_URL (RabbitMQ)")
    topology = Topology.from_settings(settings)
    if args.action != "list" and not args.queue:
        raise ConfigurationError(f"darkroom dlq {args.action} needs a QUEUE")
    # aiormq logs a failed connect itself; the error below says it once, in one line.
    logging.getLogger("aiormq.connection").setLevel(logging.CRITICAL)
    try:
        connection, dead = await DeadLetters.connect(settings.broker_url, topology)
    except (OSError, AMQPError) as exc:
        raise ConfigurationError(
            f"cannot reach the broker at {redact_url(settings.broker_url)}: "
            f"{str(exc) or type(exc).__name__}"
        ) from exc
    async with connection:
        if args.action == "list":
            for name, depth in (await dead.depths()).items():
                print(f"{depth:>8}  {name}")
            return
        spec = resolve(topology, args.queue)
        if args.action == "show":
            for parked in await dead.show(spec, args.limit):
                print(
                    f"--- {parked.message_id}  ({parked.routing_key})\n"
                    f"reason: {parked.reason}\n{parked.body}"
                )
        elif args.action == "replay":
            print(f"replayed {await dead.replay(spec, args.limit)} message(s) to {spec.name}")
        else:
            print(f"purged {await dead.purge(spec)} message(s) from {spec.dead_letter_queue}")


async def _broker(args: argparse.Namespace) -> None:
    """`declare`: the topology, with the administrator's DARKROOM_BROKER_URL, for services
    whose users may not configure. `definitions`: users and permissions as RabbitMQ
    definitions JSON, passwords read as JSON {user: password} from standard input."""
    from shared.broker_access import definitions
    from shared.topology import Topology

    settings = load_settings()
    if args.action == "definitions":
        passwords = json.load(sys.stdin)
        print(json.dumps(definitions(Topology.from_settings(settings), passwords), indent=2))
        return
    if not settings.broker_url:
        raise ConfigurationError("darkroom broker declare needs DARKROOM_BROKER_URL")
    from shared.broker import open_broker

    try:
        async with open_broker(settings.model_copy(update={"broker_declare": True})):
            pass
    except BrokerUnavailable as exc:
        raise ConfigurationError(f"cannot reach the broker: {exc}") from exc
    print("topology declared")


async def _migrate(args: argparse.Namespace) -> int:
    """Upgrade and say what was applied; or, with --status, compare without changing
    anything and exit 1 when the database is behind (a deploy step can gate on it)."""
    from shared.db import open_database
    from shared.migrations import status, upgrade

    async with open_database(load_settings(), migrate=False) as db:
        if args.status:
            found = await status(db.engine)
            print(f"current: {found.current or '(empty database)'}\nhead:    {found.head}")
            return 1 if found.behind else 0
        applied = await upgrade(db.engine)
    print(f"applied {', '.join(applied)}" if applied else "schema is up to date")
    return 0


async def _apikey(args: argparse.Namespace) -> None:
    from services.gateway.apikeys import SCOPES, create_key, list_keys, revoke_key
    from shared.db import open_database

    async with open_database(load_settings()) as db:
        if args.action == "create":
            try:
                key, secret = await create_key(db, args.name, args.scope or list(SCOPES))
            except ValueError as exc:
                raise ConfigurationError(str(exc)) from exc
            print(f"created API key {key.id} ({' '.join(sorted(key.scopes))})", file=sys.stderr)
            print("store it now; it is not shown again:", file=sys.stderr)
            print(secret)
        elif args.action == "list":
            for key in await list_keys(db):
                state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
                print(f"{key.id}  {state:<18} {key.name}  [{' '.join(sorted(key.scopes))}]")
        elif not await revoke_key(db, args.id):
            raise ConfigurationError(f"no active API key {args.id!r}")
        else:
            print(f"revoked API key {args.id}")


def _add_apikey_parser(sub: Any) -> None:
    from services.gateway.apikeys import SCOPES

    apikey = sub.add_parser("apikey", help="create, list or revoke server-to-server API keys")
    actions = apikey.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a key and print it once")
    create.add_argument("--name", required=True, help="what the key is for")
    create.add_argument(
        "--scope",
        action="append",
        choices=list(SCOPES),
        help="repeat for several (default: all of them)",
    )
    actions.add_parser("list", help="list keys (ids, names, scopes; never the secrets)")
    revoke = actions.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("id", help="the key id, as `apikey list` shows it")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="darkroom", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("gateway", "run the HTTP API"),
        ("ingest-worker", "verify stored uploads"),
        ("thumbnail-worker", "render renditions"),
        ("notifier", "deliver webhooks"),
        ("dev", "run everything in one process on embedded defaults"),
    ):
        sub.add_parser(name, help=text)
    token = sub.add_parser("token", help="print a bearer token for a user")
    token.add_argument("--user", required=True, help="the user id (JWT sub)")
    token.add_argument(
        "--ttl",
        type=int,
        default=0,
        help="seconds until it expires (default and most: DARKROOM_AUTH_MAX_TOKEN_LIFETIME)",
    )
    sub.add_parser(
        "check",
        help="reach and try every part the settings name (database, broker, storage, mail);"
        " exit 1 if one fails",
    )
    migrate = sub.add_parser("migrate", help="apply database migrations and exit")
    migrate.add_argument(
        "--status",
        action="store_true",
        help="show the current and newest revision; exit 1 if behind",
    )
    dlq = sub.add_parser("dlq", help="inspect, replay or purge dead-lettered messages")
    dlq.add_argument("action", choices=["list", "show", "replay", "purge"])
    dlq.add_argument("queue", nargs="?", help="consumer queue, e.g. thumbnail")
    dlq.add_argument("--limit", type=int, default=100, help="most messages to show or replay")
    broker = sub.add_parser("broker", help="set up RabbitMQ: topology, users")
    broker.add_argument("action", choices=["declare", "definitions"])
    _add_apikey_parser(sub)
    return parser


def commands() -> set[str]:
    """The sub-command names (deploy manifests are checked against them)."""
    parser = build_parser()
    choices: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            choices |= set(action.choices)
    return choices


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "token":
            _token(args)
        elif args.command == "migrate":
            raise SystemExit(asyncio.run(_migrate(args)))
        elif args.command == "check":
            from services.check import run

            raise SystemExit(run(load_settings()))
        elif args.command == "dlq":
            asyncio.run(_dlq(args))
        elif args.command == "apikey":
            asyncio.run(_apikey(args))
        elif args.command == "broker":
            asyncio.run(_broker(args))
        else:
            _serve(args.command)
    except ConfigurationError as exc:
        print(f"darkroom: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc

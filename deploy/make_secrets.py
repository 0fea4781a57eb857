"""Generate the credentials for compose and the Kubernetes `dev` overlay, and the
RabbitMQ definitions giving each service a user of its own.

    .venv/bin/python deploy/make_secrets.py            # or: make secrets
    .venv/bin/python deploy/make_secrets.py --force    # new values for everything

Writes (all git-ignored, mode 0600):
    deploy/.env                               compose's variables
    deploy/rabbitmq/definitions.json          users and permissions, loaded at boot
    deploy/k8s/overlays/dev/secrets/*.env     one file per Secret of the dev overlay
    deploy/k8s/overlays/dev/secrets/definitions.json

Existing files are kept unless --force: a second run must not lock the running services
out of their own broker. Rotation without downtime is in docs/operations.md.

Permissions follow RabbitMQ's access-control rules: declaring a queue or exchange needs
`configure` on it; binding needs `write` on the queue and `read` on the exchange;
publishing needs `write` on the exchange (`amq.default` for the default one); consuming
and purging need `read` on the queue. Every service declares the whole topology at
start-up (idempotently), so each can configure the topology's names and bind its queues;
what differs is where it may publish and what it may consume.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import secrets
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent
sys.path.insert(0, str(DEPLOY.parent))

from shared.settings import Settings  # noqa: E402
from shared.topology import Topology  # noqa: E402

DEFAULT_EXCHANGE = "amq.default"
VHOST = "/"


@dataclass(frozen=True)
class Permission:
    configure: str
    write: str
    read: str
    tags: tuple[str, ...] = ()


def any_of(names: Iterable[str]) -> str:
    """A pattern matching exactly these names (RabbitMQ patterns match anywhere unless
    anchored)."""
    ordered = sorted(set(names))
    if not ordered:
        return "^$"
    return "^(?:" + "|".join(re.escape(n) for n in ordered) + ")$"


def permissions(t: Topology) -> dict[str, Permission]:
    """Each broker user's configure/write/read patterns, from the topology's names."""
    exchanges = list(t.exchange_names())
    bound = [q.name for q in t.all_queues()] + [q.dead_letter_queue for q in t.all_queues()]
    everything = f"^{re.escape(t.prefix)}\\."

    def service(publishes: list[str], consumes: list[str]) -> Permission:
        return Permission(
            configure=everything,
            write=any_of(publishes + bound),
            read=any_of(exchanges + consumes),
        )

    # Workers publish outcomes, and every worker runs the outbox relay (which sends any
    # stored event); retries go through the default exchange, parking through the DLX.
    worker_publishes = [t.events_exchange, t.dead_letter_exchange, DEFAULT_EXCHANGE]
    return {
        "gateway": service([t.events_exchange], []),
        "ingest-worker": service(
            # The SQS bridge moves AWS notifications onto the storage exchange.
            [*worker_publishes, t.storage_exchange],
            [t.ingest_intents.name, t.ingest_storage.name],
        ),
        "thumbnail-worker": service(worker_publishes, [t.thumbnail.name]),
        "notifier": service(worker_publishes, [t.notifier.name]),
        # MinIO / Ceph: declare and publish to the storage exchange, nothing else.
        "storage": Permission(
            configure=any_of([t.storage_exchange]),
            write=any_of([t.storage_exchange]),
            read="^$",
        ),
        # KEDA and the RabbitMQ exporter: queue depths over the management API only.
        "monitoring": Permission("^$", "^$", "^$", ("monitoring",)),
        # Operators: `darkroom dlq`, the management UI.
        "admin": Permission(".*", ".*", ".*", ("administrator",)),
    }


def password_hash(password: str) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))."""
    salt = secrets.token_bytes(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def definitions(t: Topology, passwords: dict[str, str]) -> dict[str, object]:
    perms = permissions(t)
    return {
        "users": [
            {
                "name": user,
                "password_hash": password_hash(passwords[user]),
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": list(p.tags),
            }
            for user, p in perms.items()
        ],
        "vhosts": [{"name": VHOST}],
        "permissions": [
            {"user": user, "vhost": VHOST, "configure": p.configure, "write": p.write,
             "read": p.read}
            for user, p in perms.items()
        ],  # fmt: skip
    }


def token() -> str:
    """URL-safe, so it can sit in an amqp:// or postgresql:// URL unescaped."""
    return secrets.token_urlsafe(32)


def generate(t: Topology) -> dict[str, str]:
    """Every value the deployments need, freshly random."""
    values = {f"RABBITMQ_{u.upper().replace('-', '_')}_PASSWORD": token() for u in permissions(t)}
    values |= {
        "POSTGRES_PASSWORD": token(),
        "MINIO_ROOT_PASSWORD": token(),
        "DARKROOM_AUTH_JWT_SECRET": secrets.token_urlsafe(48),
        "DARKROOM_WEBHOOK_SECRET": "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
    }
    return values


def broker_password(values: dict[str, str], user: str) -> str:
    return values[f"RABBITMQ_{user.upper().replace('-', '_')}_PASSWORD"]


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def env_file(values: dict[str, str]) -> str:
    return "".join(f"{k}={v}\n" for k, v in values.items())


def dev_overlay_secrets(t: Topology, v: dict[str, str]) -> dict[str, dict[str, str]]:
    """The dev overlay's Secrets: each service gets only what it uses."""

    def amqp(user: str) -> str:
        return f"amqp://{user}:{broker_password(v, user)}@rabbitmq:5672/"

    common = {
        "DARKROOM_DATABASE_URL": f"postgresql://darkroom:{v['POSTGRES_PASSWORD']}@postgres:5432/darkroom",
        "DARKROOM_S3_ACCESS_KEY_ID": "darkroom",
        "DARKROOM_S3_SECRET_ACCESS_KEY": v["MINIO_ROOT_PASSWORD"],
    }
    return {
        "common": common,
        "gateway": {
            "DARKROOM_BROKER_URL": amqp("gateway"),
            "DARKROOM_AUTH_JWT_SECRET": v["DARKROOM_AUTH_JWT_SECRET"],
        },
        "ingest-worker": {"DARKROOM_BROKER_URL": amqp("ingest-worker")},
        "thumbnail-worker": {"DARKROOM_BROKER_URL": amqp("thumbnail-worker")},
        "notifier": {
            "DARKROOM_BROKER_URL": amqp("notifier"),
            "DARKROOM_WEBHOOK_URL": "",
            "DARKROOM_WEBHOOK_SECRET": v["DARKROOM_WEBHOOK_SECRET"],
        },
        "keda": {"host": f"http://monitoring:{broker_password(v, 'monitoring')}@rabbitmq:15672/"},
        "infra": {
            "POSTGRES_PASSWORD": v["POSTGRES_PASSWORD"],
            "MINIO_ROOT_USER": "darkroom",
            "MINIO_ROOT_PASSWORD": v["MINIO_ROOT_PASSWORD"],
            "MINIO_NOTIFY_AMQP_URL_PRIMARY": amqp("storage"),
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="replace existing files")
    parser.add_argument("--out", type=Path, default=DEPLOY, help="the deploy directory")
    args = parser.parse_args(argv)
    out: Path = args.out
    env = out / ".env"
    if env.exists() and not args.force:
        print(f"{env} exists; keeping it (--force makes new credentials)")
        return
    t = Topology.from_settings(Settings())
    values = generate(t)
    passwords = {u: broker_password(values, u) for u in permissions(t)}
    write(env, env_file(values))
    defs = json.dumps(definitions(t, passwords), indent=2)
    write(out / "rabbitmq" / "definitions.json", defs)
    dev = out / "k8s" / "overlays" / "dev" / "secrets"
    write(dev / "definitions.json", defs)
    for name, secret in dev_overlay_secrets(t, values).items():
        write(dev / f"{name}.env", env_file(secret))
    print(f"wrote {env}, the RabbitMQ definitions and the dev overlay's secrets")


if __name__ == "__main__":
    main()

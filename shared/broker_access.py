"""One RabbitMQ user per service, with the least each one needs, derived from the topology.

Workers trust what arrives on their queues, so who may write where is the security
boundary: the storage's user may only publish to the storage exchange, the notifier may
publish `album.revealed`, `webhook.disabled`, `mail.requested` and its own
`webhook.delivery` messages and no other event (a topic permission on the events
exchange), and no service may configure anything shared (a set-up step with the
administrator's user declares the topology: `darkroom broker declare`); the gateway
declares only its replicas' own live-event queues. Passive declares, which services use
to find their queues, need no permission.

Patterns are RabbitMQ's configure / write / read regular expressions on exchange and
queue names. `definitions()` renders them, with password hashes, as a definitions file
that RabbitMQ imports at boot (deploy/compose.yaml, the dev overlay).
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.events import AlbumRevealed, MailRequested, WebhookDisabled
from shared.topology import QueueSpec, Topology

NOTHING = "^$"
ADMIN = "admin"


@dataclass(frozen=True)
class Access:
    configure: str
    write: str
    read: str
    tags: tuple[str, ...] = ()
    # Routing keys the user may publish with, by topic exchange (unlisted: any).
    topics: tuple[tuple[str, str], ...] = ()


def _any(*names: str) -> str:
    return "^(" + "|".join(re.escape(n) for n in names) + ")$"


def _either(*patterns: str) -> str:
    return "|".join(f"(?:{p})" for p in patterns)


def _consumes(*specs: QueueSpec) -> str:
    return _any(*(s.name for s in specs))


def accounts(topology: Topology) -> dict[str, Access]:
    """Users by name: `darkroom-<service>`, the storage's and the autoscaler's."""
    t = topology
    events, storage, dlx = t.events_exchange, t.storage_exchange, t.dead_letter_exchange

    def settles(*specs: QueueSpec) -> list[str]:
        """A consumer retries (through its own retry exchange) and parks (in the DLX)."""
        return [dlx, *(s.retry_exchange for s in specs)]

    # Topology.live_events names each gateway replica's queue by a hex id.
    live = "^" + re.escape(t.live_events_prefix) + "[0-9a-f]+$"
    p = f"darkroom-{t.prefix}" if t.prefix != "darkroom" else "darkroom"
    ingest = (t.ingest_intents, t.ingest_storage)
    return {
        # Publishes the gateway's events (upload hints, deletions); declares, binds to the
        # events exchange and consumes its replicas' own live-event queues, and no other.
        f"{p}-gateway": Access(
            live,
            _either(_any(events), live),
            _either(_any(events), live),
        ),
        # Verified and rejected photos; the SQS bridge moves AWS notifications onto the
        # storage exchange.
        f"{p}-ingest-worker": Access(
            NOTHING, _any(events, storage, *settles(*ingest)), _consumes(*ingest)
        ),
        f"{p}-thumbnail-worker": Access(
            NOTHING, _any(events, *settles(t.thumbnail)), _consumes(t.thumbnail)
        ),
        # Announces album reveals it claims, endpoints it disables and the mails it fans
        # out, and sends webhook deliveries to itself; no other event: it cannot fake a
        # photo's.
        f"{p}-notifier": Access(
            NOTHING,
            _any(events, *settles(t.notifier, t.webhooks, t.mail)),
            _consumes(t.notifier, t.webhooks, t.mail),
            topics=(
                (
                    events,
                    _any(
                        AlbumRevealed.TYPE,
                        WebhookDisabled.TYPE,
                        MailRequested.TYPE,
                        t.webhook_delivery_key,
                    ),
                ),
            ),
        ),
        # MinIO declares the storage exchange (passively the same) and publishes to it.
        f"{p}-storage": Access(_any(storage), _any(storage), NOTHING),
        # KEDA reads queue depths from the management API and needs no AMQP rights.
        f"{p}-monitoring": Access(NOTHING, NOTHING, NOTHING, ("monitoring",)),
    }


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))."""
    salt = salt if salt is not None else secrets.token_bytes(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def definitions(topology: Topology, passwords: Mapping[str, str]) -> dict[str, Any]:
    """A RabbitMQ definitions document: the administrator (`admin`) and every account,
    each with its password from `passwords` (by user name)."""
    users: dict[str, Access] = {ADMIN: Access(".*", ".*", ".*", ("administrator",))}
    users |= accounts(topology)
    missing = set(users) - set(passwords)
    if missing:
        raise ValueError(f"no password for {', '.join(sorted(missing))}")
    return {
        "users": [
            {
                "name": name,
                "password_hash": password_hash(passwords[name]),
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": list(access.tags),
            }
            for name, access in users.items()
        ],
        "vhosts": [{"name": "/"}],
        "permissions": [
            {
                "user": name,
                "vhost": "/",
                "configure": access.configure,
                "write": access.write,
                "read": access.read,
            }
            for name, access in users.items()
        ],
        "topic_permissions": [
            {"user": name, "vhost": "/", "exchange": exchange, "write": keys, "read": ".*"}
            for name, access in users.items()
            for exchange, keys in access.topics
        ],
    }

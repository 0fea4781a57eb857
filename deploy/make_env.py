"""Write strong, random credentials for the compose stack and the dev Kubernetes overlay.

    python deploy/make_env.py [--force]      (or: make env)

deploy/.env                      read by `docker compose -f deploy/compose.yaml`
deploy/rabbitmq/definitions.json RabbitMQ's users (one per service) and their permissions
deploy/k8s/overlays/dev/secrets/ the dev overlay's Secrets and definitions (its secretGenerator)

Nothing here is committed (.gitignore); an existing deploy/.env is kept unless --force.
"""

from __future__ import annotations

import argparse
import base64
import json
import secrets
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.broker_access import ADMIN, accounts, definitions
from shared.settings import Settings
from shared.topology import Topology

DEPLOY = Path(__file__).resolve().parent
# compose variable holding each broker user's password
BROKER_PASSWORDS = {
    ADMIN: "RABBITMQ_ADMIN_PASSWORD",
    "darkroom-gateway": "RABBITMQ_GATEWAY_PASSWORD",
    "darkroom-ingest-worker": "RABBITMQ_INGEST_PASSWORD",
    "darkroom-thumbnail-worker": "RABBITMQ_THUMBNAIL_PASSWORD",
    "darkroom-notifier": "RABBITMQ_NOTIFIER_PASSWORD",
    "darkroom-storage": "RABBITMQ_STORAGE_PASSWORD",
    "darkroom-monitoring": "RABBITMQ_MONITORING_PASSWORD",
}


def password() -> str:
    return secrets.token_urlsafe(24)


def generate() -> dict[str, str]:
    env = {name: password() for name in BROKER_PASSWORDS.values()}
    env |= {
        "POSTGRES_PASSWORD": password(),
        "REDIS_PASSWORD": password(),
        "MINIO_ROOT_PASSWORD": password(),
        "MINIO_DARKROOM_PASSWORD": password(),
        "DARKROOM_AUTH_JWT_SECRET": secrets.token_urlsafe(48),
        "DARKROOM_WEBHOOK_SECRET": "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
    }
    return env


def kubernetes_files(env: dict[str, str]) -> dict[str, str]:
    """The dev overlay's Secrets (its secretGenerator): each service gets only what it
    uses, and its own broker user."""

    def amqp(user: str) -> str:
        return f"amqp://{user}:{env[BROKER_PASSWORDS[user]]}@rabbitmq:5672/"

    def lines(values: dict[str, str]) -> str:
        return "".join(f"{k}={v}\n" for k, v in values.items())

    common = {
        "DARKROOM_DATABASE_URL": f"postgresql://darkroom:{env['POSTGRES_PASSWORD']}@postgres:5432/darkroom",
        "DARKROOM_S3_ACCESS_KEY_ID": "darkroom",
        "DARKROOM_S3_SECRET_ACCESS_KEY": env["MINIO_DARKROOM_PASSWORD"],
    }
    per_service = {
        "gateway": {
            "DARKROOM_BROKER_URL": amqp("darkroom-gateway"),
            # No Redis in the dev cluster: rate limits are per replica there.
            "DARKROOM_AUTH_JWT_SECRET": env["DARKROOM_AUTH_JWT_SECRET"],
        },
        "ingest-worker": {"DARKROOM_BROKER_URL": amqp("darkroom-ingest-worker")},
        "thumbnail-worker": {"DARKROOM_BROKER_URL": amqp("darkroom-thumbnail-worker")},
        "notifier": {
            "DARKROOM_BROKER_URL": amqp("darkroom-notifier"),
            "DARKROOM_WEBHOOK_URL": "",
            "DARKROOM_WEBHOOK_SECRET": env["DARKROOM_WEBHOOK_SECRET"],
        },
        # `darkroom broker declare` in the migrate Job: the only holder of configure rights.
        "broker-admin": {"DARKROOM_BROKER_URL": amqp(ADMIN)},
        # KEDA reads queue depths over the management API (protocol: http).
        "keda": {
            "host": f"http://darkroom-monitoring:{env['RABBITMQ_MONITORING_PASSWORD']}"
            "@rabbitmq:15672/"
        },
        "infra": {
            "POSTGRES_PASSWORD": env["POSTGRES_PASSWORD"],
            "MINIO_ROOT_USER": "minio-admin",
            "MINIO_ROOT_PASSWORD": env["MINIO_ROOT_PASSWORD"],
            "MINIO_DARKROOM_PASSWORD": env["MINIO_DARKROOM_PASSWORD"],
            # The storage's user: it may publish to the storage exchange and nothing else.
            "MINIO_NOTIFY_AMQP_URL_PRIMARY": amqp("darkroom-storage"),
        },
    }
    return {"common.env": lines(common)} | {
        f"{name}.env": lines(values) for name, values in per_service.items()
    }


def write(path: Path, text: str, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    print(f"wrote {path.relative_to(DEPLOY.parent)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="replace an existing deploy/.env")
    args = parser.parse_args()
    dotenv = DEPLOY / ".env"
    if dotenv.exists() and not args.force:
        print(f"{dotenv} exists; keeping it (--force replaces every credential)")
        return
    env = generate()
    topology = Topology.from_settings(Settings(topology_prefix="darkroom"))
    assert set(BROKER_PASSWORDS) == {ADMIN, *accounts(topology)}
    passwords = {user: env[var] for user, var in BROKER_PASSWORDS.items()}
    write(dotenv, "".join(f"{k}={v}\n" for k, v in env.items()))
    write(
        DEPLOY / "rabbitmq" / "definitions.json",
        json.dumps(definitions(topology, passwords), indent=2) + "\n",
        # RabbitMQ reads it as its own user in the container; it holds salted hashes only.
        0o644,
    )
    dev = DEPLOY / "k8s" / "overlays" / "dev" / "secrets"
    write(dev / "definitions.json", json.dumps(definitions(topology, passwords), indent=2) + "\n")
    for name, text in kubernetes_files(env).items():
        write(dev / name, text)


if __name__ == "__main__":
    main()

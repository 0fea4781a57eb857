"""Write strong, random credentials for the compose stack and the dev Kubernetes overlay.

    python deploy/make_env.py [--force]      (or: make env)

deploy/.env                      read by `docker compose -f deploy/compose.yaml`
deploy/rabbitmq/definitions.json RabbitMQ's users (one per service) and their permissions
deploy/k8s-dev/*.env             the Kubernetes Secrets of the dev overlay (docs/operations.md)

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

from shared.broker_access import ADMIN, accounts, definitions  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.topology import Topology  # noqa: E402

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
    def amqp(user: str) -> str:
        return f"amqp://{user}:{env[BROKER_PASSWORDS[user]]}@rabbitmq:5672/"

    broker = {
        "admin": amqp(ADMIN),
        **{
            user.removeprefix("darkroom-"): amqp(user) for user in BROKER_PASSWORDS if user != ADMIN
        },
        "management": f"http://darkroom-monitoring:{env['RABBITMQ_MONITORING_PASSWORD']}"
        "@rabbitmq:15672/%2F",
    }
    darkroom = {
        "DARKROOM_DATABASE_URL": f"postgresql://darkroom:{env['POSTGRES_PASSWORD']}@postgres:5432/darkroom",
        "DARKROOM_REDIS_URL": f"redis://:{env['REDIS_PASSWORD']}@redis:6379/0",
        "DARKROOM_S3_ACCESS_KEY_ID": "darkroom",
        "DARKROOM_S3_SECRET_ACCESS_KEY": env["MINIO_DARKROOM_PASSWORD"],
        "DARKROOM_AUTH_JWT_SECRET": env["DARKROOM_AUTH_JWT_SECRET"],
        "DARKROOM_WEBHOOK_SECRET": env["DARKROOM_WEBHOOK_SECRET"],
    }
    infra = {
        "POSTGRES_PASSWORD": env["POSTGRES_PASSWORD"],
        "REDIS_PASSWORD": env["REDIS_PASSWORD"],
        "MINIO_ROOT_PASSWORD": env["MINIO_ROOT_PASSWORD"],
        "MINIO_DARKROOM_PASSWORD": env["MINIO_DARKROOM_PASSWORD"],
        "MINIO_NOTIFY_AMQP_URL_PRIMARY": amqp("darkroom-storage"),
    }

    def lines(values: dict[str, str]) -> str:
        return "".join(f"{k}={v}\n" for k, v in values.items())

    return {
        "darkroom-secrets.env": lines(darkroom),
        "darkroom-broker.env": lines(broker),
        "darkroom-dev-infra.env": lines(infra),
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
    for name, text in kubernetes_files(env).items():
        write(DEPLOY / "k8s-dev" / name, text)


if __name__ == "__main__":
    main()

"""The compose file, Kubernetes manifests, Dockerfile and README agree with the code.

No container engine runs here, so these check what can be checked without one: every
document parses, every DARKROOM_ variable is a real setting and the values validate,
commands are real CLI commands, queue and exchange names are the topology's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from services.cli import commands as cli_commands
from shared import secrets
from shared.settings import Settings
from shared.topology import Topology

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SETTING_NAMES = {f"DARKROOM_{name.upper()}" for name in Settings.model_fields}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the files under test configure the settings built here."""
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def topology() -> Topology:
    return Topology.from_settings(Settings())


def settings_from(env: dict[str, Any]) -> Settings:
    """Validate an environment block the way a service would at start-up."""
    unknown = {k for k in env if k.startswith("DARKROOM_")} - SETTING_NAMES
    assert not unknown, f"not settings: {unknown}"
    values = {k.removeprefix("DARKROOM_").lower(): v for k, v in env.items() if v != ""}
    return Settings(**values)


def substitute(value: Any) -> Any:
    """Compose-style ${VAR:?msg} / ${VAR:-default} with a plausible value."""
    if not isinstance(value, str):
        return value
    return re.sub(
        r"\$\{([A-Z_]+)(?::[?-]([^}]*))?\}",
        lambda m: secrets.jwt_secret() if "SECRET" in m[1] else "",
        value,
    )


# The example Secret's placeholders, and what an operator puts there instead.
GENERATED = {
    "DARKROOM_AUTH_JWT_SECRET": secrets.jwt_secret,
    "DARKROOM_WEBHOOK_SECRET": secrets.webhook_secret,
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return doc


def test_compose_services_run_real_commands_with_valid_settings(compose: dict[str, Any]) -> None:
    commands = cli_commands()
    darkroom = {n: s for n, s in compose["services"].items() if s.get("image") == "darkroom:dev"}
    assert set(darkroom) == {"gateway", "ingest-worker", "thumbnail-worker", "notifier"}
    for name, service in darkroom.items():
        assert service["command"][0] in commands, name
        env = {k: substitute(v) for k, v in service["environment"].items()}
        settings = settings_from(env)
        assert settings.broker_url.startswith("amqp://"), "compose must use real RabbitMQ"
        assert settings.database_url.startswith("postgresql://")
        assert settings.s3_endpoint_url == "http://minio:9000"
        # The gateway must be reachable from outside its container.
        assert settings.gateway_host == "0.0.0.0"


def test_compose_minio_publishes_to_the_storage_exchange(
    compose: dict[str, Any], topology: Topology
) -> None:
    env = compose["services"]["minio"]["environment"]
    assert env["MINIO_NOTIFY_AMQP_EXCHANGE_PRIMARY"] == topology.storage_exchange
    assert env["MINIO_NOTIFY_AMQP_EXCHANGE_TYPE_PRIMARY"] == "topic"
    assert env["MINIO_NOTIFY_AMQP_DURABLE_PRIMARY"] == "on"
    assert env["MINIO_NOTIFY_AMQP_QUEUE_DIR_PRIMARY"], "events must survive a broker outage"
    setup = " ".join(compose["services"]["minio-setup"]["command"])
    assert "--prefix originals/" in setup and "arn:minio:sqs::PRIMARY:amqp" in setup
    names = {s for s in compose["services"]}
    assert {"rabbitmq", "postgres", "minio", "mailpit", "redis"} <= names


def k8s_documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_kubernetes_manifests_fit_the_code(topology: Topology) -> None:
    docs = k8s_documents()
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        assert {"apiVersion", "kind"} <= set(doc), doc
        by_kind.setdefault(doc["kind"], []).append(doc)
    config = by_kind["ConfigMap"][0]["data"]
    secret = by_kind["Secret"][0]["stringData"]
    settings = settings_from({**config, **secret, **{k: g() for k, g in GENERATED.items()}})
    commands = cli_commands()
    for deployment in by_kind["Deployment"]:
        pod = deployment["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert container["args"][0] in commands
        assert pod["terminationGracePeriodSeconds"] > settings.shutdown_grace
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    queues = {q.name for q in topology.all_queues()}
    deployments = {d["metadata"]["name"] for d in by_kind["Deployment"]}
    scaled = by_kind["ScaledObject"]
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scaled} == deployments - {"gateway"}
    for obj in scaled:
        for trigger in obj["spec"]["triggers"]:
            assert trigger["metadata"]["queueName"] in queues


def test_the_example_secrets_are_refused_until_replaced() -> None:
    [secret] = [d["stringData"] for d in k8s_documents() if d["kind"] == "Secret"]
    for name in GENERATED:
        with pytest.raises(ValidationError, match="generate one with"):
            settings_from({name: secret[name]})


def test_kustomization_lists_existing_files() -> None:
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (DEPLOY / "k8s" / resource).exists(), resource


def test_dockerfile_runs_the_cli_as_non_root() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["darkroom"]' in dockerfile
    assert re.search(r"^USER \d+", dockerfile, re.M)


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `(DARKROOM_[A-Z0-9_]+)`", readme, re.M))
    assert documented == SETTING_NAMES

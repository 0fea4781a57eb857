"""The compose file, the Dockerfile, the broker users and the README agree with the code.

No container engine runs here, so these check what can be checked without one: every
DARKROOM_ variable is a real setting and the values validate, commands are real CLI
commands, ports stay on the loopback, images are pinned, and each broker user may do
exactly what its service needs, by the topology's names.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from services.cli import commands as cli_commands
from shared.broker_access import ADMIN, accounts, definitions
from shared.settings import Settings
from shared.topology import Topology
from tests.manifests import DEPLOY, ROOT, SERVICES, WORKERS, make_env, setting_names, settings_from


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the files under test configure the settings built here."""
    for name in setting_names():
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def topology() -> Topology:
    return Topology.from_settings(Settings())


def substitute(value: Any, env: dict[str, str]) -> Any:
    """Compose's ${VAR:?msg} / ${VAR:-default}, from what `make env` generates."""
    if not isinstance(value, str):
        return value
    return re.sub(
        r"\$\{([A-Z_]+)(?::([?-])([^}]*))?\}",
        lambda m: env.get(m[1], m[3] if m[2] == "-" else ""),
        value,
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return doc


@pytest.fixture(scope="module")
def generated() -> dict[str, str]:
    env: dict[str, str] = make_env().generate()
    return env


def darkroom_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if s.get("image") == "darkroom:dev"}


def test_compose_runs_every_service_and_the_one_shots_with_valid_settings(
    compose: dict[str, Any], generated: dict[str, str]
) -> None:
    commands = cli_commands()
    darkroom = darkroom_services(compose)
    assert set(darkroom) == {*SERVICES, "migrate", "broker-setup"}
    assert darkroom["migrate"]["command"] == ["migrate"]
    assert darkroom["broker-setup"]["command"] == ["broker", "declare"]
    for name in SERVICES:
        service = darkroom[name]
        assert service["command"][0] in commands, name
        env = {k: substitute(v, generated) for k, v in service["environment"].items()}
        settings = settings_from(env)
        assert settings.broker_url.startswith("amqp://"), "compose must use real RabbitMQ"
        assert settings.database_url.startswith("postgresql://")
        assert settings.s3_endpoint_url == "http://minio:9000"
        assert settings.gateway_host == "0.0.0.0"
        # Set-up is done once by the one-shots, which every service waits for.
        assert settings.broker_declare is False
        assert settings.migrate_on_start is False
        for one_shot in ("broker-setup", "migrate"):
            assert service["depends_on"][one_shot] == {
                "condition": "service_completed_successfully"
            }


def test_compose_publishes_ports_on_the_loopback_only(compose: dict[str, Any]) -> None:
    published = {n: s["ports"] for n, s in compose["services"].items() if "ports" in s}
    assert published, "the gateway at least is published"
    for name, ports in published.items():
        for port in ports:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port}"


def test_compose_pins_every_image(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if "build" in service:
            continue
        image = service["image"]
        repository, _, tag = image.partition("@")[0].rpartition(":")
        assert "@sha256:" in image or (repository and tag and tag != "latest"), name
        assert not re.fullmatch(r"\d+|[a-z]+", tag), f"{name}: {tag} is a moving tag"


def test_compose_runs_replicas_of_every_worker(compose: dict[str, Any]) -> None:
    for name in WORKERS:
        assert compose["services"][name]["deploy"]["replicas"] >= 1, name


def test_make_env_provides_every_credential_compose_demands(
    compose: dict[str, Any], generated: dict[str, str]
) -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    demanded = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    assert demanded <= set(generated), demanded - set(generated)
    for value in generated.values():
        assert len(value) >= 32


def broker_user(url: str, env: dict[str, str]) -> str:
    parts = urlsplit(substitute(url, env))
    assert parts.password, url
    return parts.username or ""


def test_compose_gives_each_service_its_own_broker_user(
    compose: dict[str, Any], generated: dict[str, str], topology: Topology
) -> None:
    users = {
        name: broker_user(s["environment"]["DARKROOM_BROKER_URL"], generated)
        for name, s in darkroom_services(compose).items()
        if "DARKROOM_BROKER_URL" in s["environment"]
    }
    assert users == {**{s: f"darkroom-{s}" for s in SERVICES}, "broker-setup": ADMIN}
    minio = compose["services"]["minio"]["environment"]
    assert broker_user(minio["MINIO_NOTIFY_AMQP_URL_PRIMARY"], generated) == "darkroom-storage"
    assert set(users.values()) - {ADMIN} <= set(accounts(topology))
    # The definitions RabbitMQ loads hold exactly these users, with make env's passwords.
    passwords = {user: generated[var] for user, var in make_env().BROKER_PASSWORDS.items()}
    doc = definitions(topology, passwords)
    assert {u["name"] for u in doc["users"]} == {ADMIN, *accounts(topology)}
    assert "guest" not in {u["name"] for u in doc["users"]}


def allowed(pattern: str, names: list[str]) -> set[str]:
    """The names a RabbitMQ permission pattern grants (unanchored regex search)."""
    return {n for n in names if re.search(pattern, n)}


def test_each_broker_user_may_do_exactly_what_its_service_needs(topology: Topology) -> None:
    t = topology
    # A gateway replica's live-event queue, and names only like one.
    live = t.live_events("0f1e2d3c4b5a6978").name
    decoys = [f"{t.live_events_prefix}x", f"{live}.x", f"{t.thumbnail.name}.live"]
    names = [*t.exchange_names(), *t.queue_names(), live, *decoys, "amq.default", "amq.topic"]
    retry = {q.name: q.retry_exchange for q in t.all_queues()}
    events, storage, dlx = t.events_exchange, t.storage_exchange, t.dead_letter_exchange
    intents, uploads = t.ingest_intents.name, t.ingest_storage.name
    expected = {
        # Declares, binds and consumes its replicas' own live-event queues.
        "darkroom-gateway": ({live}, {events, live}, {events, live}),
        "darkroom-ingest-worker": (
            set(),
            {events, storage, dlx, retry[intents], retry[uploads]},
            {intents, uploads},
        ),
        "darkroom-thumbnail-worker": (
            set(),
            {events, dlx, retry[t.thumbnail.name]},
            {t.thumbnail.name},
        ),
        # The events exchange, but only with album.revealed, webhook.disabled,
        # mail.requested and its own webhook.delivery messages (its topic permission
        # below); its three queues: events, webhook deliveries and mail.
        "darkroom-notifier": (
            set(),
            {events, dlx, retry[t.notifier.name], retry[t.webhooks.name], retry[t.mail.name]},
            {t.notifier.name, t.webhooks.name, t.mail.name},
        ),
        # The storage's notification user publishes to the storage exchange and nowhere else.
        "darkroom-storage": ({storage}, {storage}, set()),
        "darkroom-monitoring": (set(), set(), set()),
    }
    granted = {
        user: (
            allowed(a.configure, names),
            allowed(a.write, names),
            allowed(a.read, names),
        )
        for user, a in accounts(t).items()
    }
    assert granted == expected
    assert accounts(t)["darkroom-monitoring"].tags == ("monitoring",)
    topics = {user: a.topics for user, a in accounts(t).items() if a.topics}
    notifier_topics = r"^(album\.revealed|webhook\.disabled|mail\.requested|webhook\.delivery)$"
    assert topics == {"darkroom-notifier": ((events, notifier_topics),)}


def test_dockerfile_installs_from_the_lock_on_a_pinned_base_and_runs_as_non_root() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["darkroom"]' in dockerfile
    assert re.search(r"^USER \d+", dockerfile, re.M)
    assert re.search(r"^ARG BASE=[\w./:-]+@sha256:[0-9a-f]{64}$", dockerfile, re.M)
    assert "-r requirements-runtime.lock" in dockerfile
    assert "--no-deps ." in dockerfile
    assert re.search(r"^HEALTHCHECK .*\n?.*healthz", dockerfile, re.M)


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `(DARKROOM_[A-Z0-9_]+)`", readme, re.M))
    assert documented == setting_names()

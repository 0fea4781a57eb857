"""The Kubernetes manifests, as each kustomize build renders them, fit the code and the
operating rules: restricted pods, probes, disruption budgets, a migration step before the
roll, autoscaling on all of each queue's work, a broker user per service."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import ValidationError

from services.cli import commands as cli_commands
from shared import secrets
from shared.broker_access import ADMIN, accounts
from shared.settings import Settings
from shared.topology import Topology
from tests.manifests import (
    DEPLOY,
    SERVICES,
    VARIANTS,
    WORKERS,
    by_kind,
    containers,
    darkroom_owned,
    make_env,
    render,
    setting_names,
    settings_from,
)

# Each worker's queues, by the topology's attribute names.
WORKER_QUEUES = {
    "ingest-worker": ("ingest_intents", "ingest_storage"),
    "thumbnail-worker": ("thumbnail",),
    "notifier": ("notifier", "webhooks", "mail"),
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in setting_names():
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def topology() -> Topology:
    return Topology.from_settings(Settings())


def named(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in by_kind(docs, kind)}


def example_secrets() -> dict[str, dict[str, str]]:
    path = DEPLOY / "k8s" / "base" / "secret.example.yaml"
    return {d["metadata"]["name"]: d["stringData"] for d in yaml.safe_load_all(path.read_text())}


def operator_secrets() -> dict[str, dict[str, str]]:
    """The example Secrets as an operator fills them in: every placeholder secret replaced
    by a freshly generated one (the placeholders themselves are refused, see below)."""
    fresh = {
        "DARKROOM_AUTH_JWT_SECRET": secrets.jwt_secret(),
        "DARKROOM_WEBHOOK_SECRET": secrets.webhook_secret(),
    }
    return {
        name: {k: fresh.get(k, v) for k, v in data.items()}
        for name, data in example_secrets().items()
    }


def pod_env(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, Any]:
    """The environment a container starts with: its ConfigMap, the example Secrets (the
    ones an operator creates), then its own env, resolving limits it reads."""
    configs = named(docs, "ConfigMap")
    filled = operator_secrets()
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env |= configs[source["configMapRef"]["name"]]["data"]
        else:
            env |= filled[source["secretRef"]["name"]]
    limits = container["resources"].get("limits", {})
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            env[var["name"]] = limits[var["valueFrom"]["resourceFieldRef"]["resource"][7:]]
    return env


def test_each_deployment_runs_a_real_command_with_valid_settings_and_probes() -> None:
    docs = render("aws")
    commands = cli_commands()
    deployments = named(docs, "Deployment")
    assert set(deployments) == set(SERVICES)
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert container["args"] == [name] and name in commands
        settings = settings_from(pod_env(docs, container))
        assert settings.migrate_on_start is False, "the migrate Job upgrades the schema"
        assert settings.broker_declare is False, "service users may configure nothing"
        assert settings.health_host == "0.0.0.0"
        assert pod["terminationGracePeriodSeconds"] > settings.shutdown_grace
        for probe, path in [("startupProbe", "/healthz"), ("readinessProbe", "/readyz")]:
            assert container[probe]["httpGet"] == {"path": path, "port": "health"}, name
        health = {p["name"]: p["containerPort"] for p in container["ports"]}["health"]
        assert health == settings.health_port
        spread = pod["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in spread} >= {"topology.kubernetes.io/zone"}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_pod_meets_the_restricted_standard_and_runs_a_pinned_image(variant: str) -> None:
    docs = render(variant)
    for namespace in by_kind(docs, "Namespace"):
        labels = namespace["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    workloads = by_kind(docs, "Deployment") + by_kind(docs, "Job")
    assert workloads
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        name = workload["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        for container in containers(workload):
            # Pinned: a release tag or a digest, never a moving tag.
            image = container["image"]
            tag = image.partition("@")[0].rpartition(":")[2]
            assert "@sha256:" in image or (":" in image and tag != "latest"), image
            assert not re.fullmatch(r"\d+|[a-z]+", tag), f"{image} has a moving tag"
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert "memory" in container["resources"]["limits"], name


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_deployment_has_a_disruption_budget(variant: str) -> None:
    docs = render(variant)
    budgets = [p["spec"]["selector"]["matchLabels"] for p in by_kind(docs, "PodDisruptionBudget")]
    for deployment in filter(darkroom_owned, by_kind(docs, "Deployment")):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert any(b.items() <= labels.items() for b in budgets), deployment["metadata"]["name"]


def test_the_migrate_job_declares_the_topology_and_upgrades_the_schema() -> None:
    docs = render("aws")
    job = named(docs, "Job")["migrate"]
    pod = job["spec"]["template"]["spec"]
    [declare] = pod["initContainers"]
    [migrate] = pod["containers"]
    assert declare["args"] == ["broker", "declare"] and migrate["args"] == ["migrate"]
    admin = urlsplit(pod_env(docs, declare)["DARKROOM_BROKER_URL"])
    assert admin.username == ADMIN
    settings_from(pod_env(docs, migrate))
    assert "DARKROOM_BROKER_URL" not in pod_env(docs, migrate)


def test_each_service_has_its_own_broker_user(topology: Topology) -> None:
    docs = render("aws")
    users = {}
    for name, deployment in named(docs, "Deployment").items():
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        users[name] = urlsplit(pod_env(docs, container)["DARKROOM_BROKER_URL"]).username
    assert users == {s: f"darkroom-{s}" for s in SERVICES}
    keda = urlsplit(example_secrets()["darkroom-keda"]["host"]).username
    assert keda == "darkroom-monitoring" and keda in accounts(topology)
    # The dev overlay's generated Secrets name the same users.
    module = make_env()
    files = module.kubernetes_files(module.generate())
    for service in SERVICES:
        env = dict(line.split("=", 1) for line in files[f"{service}.env"].splitlines())
        assert urlsplit(env["DARKROOM_BROKER_URL"]).username == f"darkroom-{service}"
    infra = dict(line.split("=", 1) for line in files["infra.env"].splitlines())
    assert urlsplit(infra["MINIO_NOTIFY_AMQP_URL_PRIMARY"]).username == "darkroom-storage"


@pytest.mark.parametrize("variant", ["dev", "aws"])
def test_keda_scales_each_worker_on_all_the_work_in_its_queues(
    variant: str, topology: Topology
) -> None:
    docs = render(variant)
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in by_kind(docs, "ScaledObject")}
    assert set(scaled) == set(WORKERS)
    for worker, queues in WORKER_QUEUES.items():
        triggers = scaled[worker]["spec"]["triggers"]
        expected = {getattr(topology, q).name for q in queues}
        assert {t["metadata"]["queueName"] for t in triggers} == expected
        for trigger in triggers:
            # The management API counts unacknowledged messages; AMQP sees ready only.
            assert trigger["metadata"]["protocol"] == "http"
            assert trigger["metadata"]["mode"] == "QueueLength"
            assert trigger["authenticationRef"]["name"] == "rabbitmq-management"


def test_the_hpa_alternative_scales_workers_on_the_same_targets_as_keda() -> None:
    keda = {
        t["metadata"]["queueName"]: t["metadata"]["value"]
        for s in by_kind(render("aws"), "ScaledObject")
        for t in s["spec"]["triggers"]
    }
    docs = render("aws-hpa")
    assert not by_kind(docs, "ScaledObject")
    hpas = named(docs, "HorizontalPodAutoscaler")
    assert set(hpas) == set(SERVICES)
    targets = {}
    for worker in WORKERS:
        for metric in hpas[worker]["spec"]["metrics"]:
            external = metric["external"]
            assert external["metric"]["name"] == "darkroom_queue_messages"
            queue = external["metric"]["selector"]["matchLabels"]["queue"]
            targets[queue] = external["target"]["averageValue"]
    assert targets == keda


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_gateway_scales_on_cpu(variant: str) -> None:
    hpa = named(render(variant), "HorizontalPodAutoscaler")["gateway"]
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert hpa["spec"]["minReplicas"] >= 2


def test_the_ingress_network_policies_and_service_monitor_expose_only_what_they_should() -> None:
    docs = render("dev")
    [ingress] = by_kind(docs, "Ingress")
    [path] = ingress["spec"]["rules"][0]["http"]["paths"]
    assert path["backend"]["service"] == {"name": "gateway", "port": {"name": "http"}}
    policies = named(docs, "NetworkPolicy")
    assert {"default-deny-ingress", "gateway-api", "metrics-scrape"} <= set(policies)
    [monitor] = by_kind(docs, "ServiceMonitor")
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["health"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    scraped = {
        s["spec"]["selector"]["app.kubernetes.io/name"]
        for s in by_kind(docs, "Service")
        if selector.items() <= s["metadata"].get("labels", {}).items()
    }
    assert scraped == set(SERVICES)


def mebibytes(quantity: str) -> int:
    units = {"Mi": 1, "Gi": 1024}
    return int(quantity[:-2]) * units[quantity[-2:]]


def test_render_memory_and_concurrency_follow_the_thumbnail_pods_limits() -> None:
    docs = render("aws")
    deployment = named(docs, "Deployment")["thumbnail-worker"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    env = {v["name"]: v for v in container["env"]}
    limits = container["resources"]["limits"]
    assert env["DARKROOM_RENDER_CONCURRENCY"]["valueFrom"]["resourceFieldRef"] == {
        "resource": "limits.cpu",
        "divisor": "1",
    }
    budget = int(env["DARKROOM_RENDER_MEMORY_MB"]["value"])
    # The interpreter, libraries and message buffers keep at least 256 MiB of the limit.
    assert 0 < budget <= mebibytes(limits["memory"]) - 256
    prefetch = int(env["DARKROOM_PREFETCH"]["value"])
    assert prefetch == 2 * int(limits["cpu"]), "one message waiting per render"


def test_the_example_secrets_are_refused_until_replaced() -> None:
    values = {k: v for data in example_secrets().values() for k, v in data.items()}
    for name in ("DARKROOM_AUTH_JWT_SECRET", "DARKROOM_WEBHOOK_SECRET"):
        with pytest.raises(ValidationError, match="generate one with"):
            settings_from({name: values[name]})

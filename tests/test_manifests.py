"""Every object each kustomize build produces is valid, offline (also run by make lint).

Core objects go through kubernetes-validate --strict (the Kubernetes OpenAPI schemas,
unknown fields refused); KEDA's and the Prometheus Operator's through validators generated
from their CRDs (tests/crds.py). The compose file through the compose-spec schema.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests import crds
from tests.manifests import DEPLOY, VARIANTS, render

KUBERNETES_VERSION = "1.30.0"


def validate(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_object_of_each_installation_validates_strictly(variant: str) -> None:
    docs = render(variant)
    assert docs
    failures = crds.problems([d for d in docs if crds.is_crd_object(d)])
    for doc in docs:
        if crds.is_crd_object(doc):
            continue
        try:
            validate(doc)
        except kubernetes_validate.ValidationError as exc:
            failures.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc}")
    assert not failures, "\n".join(failures)


def test_strict_validation_refuses_a_misspelt_field() -> None:
    [deployment] = [d for d in render("aws") if d["kind"] == "Deployment"][:1]
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)


def test_crd_schemas_refuse_a_mistyped_keda_trigger_and_service_monitor() -> None:
    docs = render("aws")
    [scaled] = [d for d in docs if d["kind"] == "ScaledObject"][:1]
    [monitor] = [d for d in docs if d["kind"] == "ServiceMonitor"]
    assert crds.problems([scaled, monitor]) == []
    broken_trigger, broken_monitor = copy.deepcopy(scaled), copy.deepcopy(monitor)
    broken_trigger["spec"]["pollingInterval"] = "often"
    broken_monitor["spec"]["endpoints"][0]["interval"] = 30
    refused = crds.problems([broken_trigger, broken_monitor])
    assert [p.split(":")[0] for p in refused] == [
        f"ScaledObject/{scaled['metadata']['name']}",
        f"ServiceMonitor/{monitor['metadata']['name']}",
    ]


def compose_schema() -> dict[str, Any]:
    """The compose-spec JSON schema as check-jsonschema vendors it."""
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads((vendor / "compose-spec.json").read_text())
    return schema


def test_the_compose_file_fits_the_compose_spec() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    schema = compose_schema()
    jsonschema.validate(compose, schema)
    compose["services"]["gateway"]["replicas_typo"] = 2
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(compose, schema)

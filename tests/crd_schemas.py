"""JSON schemas for the custom resources Darkroom ships: KEDA's ScaledObject and
TriggerAuthentication (keda.sh/v1alpha1) and the Prometheus Operator's ServiceMonitor
(monitoring.coreos.com/v1).

No package on PyPI or npm carries these CRDs' schemas, so this is the part of each
upstream CRD's openAPIV3Schema that the manifests use, written from the CRD definitions:
unknown fields are refused at every level the manifests fill in, the way
`kubectl apply --validate=strict` refuses them once the CRDs are installed.
"""

from __future__ import annotations

from typing import Any

STRING = {"type": "string"}
INT = {"type": "integer"}
OBJECT_META = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": STRING,
        "namespace": STRING,
        "labels": {"type": "object", "additionalProperties": STRING},
        "annotations": {"type": "object", "additionalProperties": STRING},
    },
    "additionalProperties": False,
}
NAME_REF = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": STRING, "kind": STRING},
    "additionalProperties": False,
}
# KEDA's rabbitmq scaler reads trigger metadata as strings; `protocol: http` makes it ask
# the management API, which counts unacknowledged messages too.
RABBITMQ_METADATA = {
    "type": "object",
    "required": ["protocol", "queueName", "mode", "value"],
    "properties": {
        "protocol": {"enum": ["http", "amqp", "auto"]},
        "queueName": STRING,
        "vhostName": STRING,
        "mode": {"enum": ["QueueLength", "MessageRate"]},
        "value": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"},
        "activationValue": STRING,
        "host": STRING,
        "hostFromEnv": STRING,
        "useRegex": STRING,
        "excludeUnacknowledged": STRING,
    },
    "additionalProperties": False,
}


def resource(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": OBJECT_META,
            "spec": spec,
        },
        "additionalProperties": False,
    }


SCALED_OBJECT = resource(
    "keda.sh/v1alpha1",
    "ScaledObject",
    {
        "type": "object",
        "required": ["scaleTargetRef", "triggers"],
        "properties": {
            "scaleTargetRef": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": STRING, "kind": STRING, "apiVersion": STRING},
                "additionalProperties": False,
            },
            "minReplicaCount": {**INT, "minimum": 0},
            "maxReplicaCount": {**INT, "minimum": 1},
            "pollingInterval": INT,
            "cooldownPeriod": INT,
            "triggers": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["type", "metadata"],
                    "properties": {
                        "type": {"const": "rabbitmq"},
                        "name": STRING,
                        "metadata": RABBITMQ_METADATA,
                        "authenticationRef": NAME_REF,
                    },
                    "additionalProperties": False,
                },
            },
        },
        "additionalProperties": False,
    },
)

TRIGGER_AUTHENTICATION = resource(
    "keda.sh/v1alpha1",
    "TriggerAuthentication",
    {
        "type": "object",
        "properties": {
            "secretTargetRef": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["parameter", "name", "key"],
                    "properties": {"parameter": STRING, "name": STRING, "key": STRING},
                    "additionalProperties": False,
                },
            },
        },
        "additionalProperties": False,
    },
)

SERVICE_MONITOR = resource(
    "monitoring.coreos.com/v1",
    "ServiceMonitor",
    {
        "type": "object",
        "required": ["selector", "endpoints"],
        "properties": {
            "selector": {
                "type": "object",
                "properties": {
                    "matchLabels": {"type": "object", "additionalProperties": STRING},
                },
                "additionalProperties": False,
            },
            "namespaceSelector": {"type": "object"},
            "endpoints": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {
                        "port": STRING,
                        "path": STRING,
                        "scheme": {"enum": ["http", "https"]},
                        "interval": {"type": "string", "pattern": r"^[0-9]+(ms|s|m|h)$"},
                        "scrapeTimeout": {"type": "string", "pattern": r"^[0-9]+(ms|s|m|h)$"},
                    },
                    "additionalProperties": False,
                },
            },
        },
        "additionalProperties": False,
    },
)

CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): SCALED_OBJECT,
    ("keda.sh/v1alpha1", "TriggerAuthentication"): TRIGGER_AUTHENTICATION,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
}

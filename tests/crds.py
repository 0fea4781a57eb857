"""KEDA and Prometheus Operator objects checked against their CRDs' own schemas.

No Python package ships those schemas; the npm packages `@kubernetes-models/keda` and
`@kubernetes-models/prometheus-operator` ship validators generated from the upstream CRDs.
They are installed at the versions tests/crd_node/package-lock.json pins (npm ci, once,
into tests/crd_node/node_modules) and run by tests/crd_node/validate.mjs under Node.js.
"""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import require_tool

HERE = Path(__file__).parent / "crd_node"
KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
}


def is_crd_object(doc: dict[str, Any]) -> bool:
    return (doc["apiVersion"], doc["kind"]) in KINDS


def problems(docs: list[dict[str, Any]]) -> list[str]:
    """`Kind/name: errors` for each object its CRD's schema refuses."""
    done = subprocess.run(  # noqa: S603
        [_node(), str(HERE / "validate.mjs")],
        input=json.dumps(docs),
        capture_output=True,
        text=True,
        check=True,
        cwd=HERE,
    )
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(results) == len(docs), done.stderr
    return [f"{r['kind']}/{r['name']}: {r['errors']}" for r in results if r["errors"]]


@functools.cache
def _node() -> str:
    purpose = "KEDA and ServiceMonitor objects cannot be checked"
    node, npm = require_tool("node", purpose), require_tool("npm", purpose)
    if not (HERE / "node_modules").is_dir():
        subprocess.run(  # noqa: S603
            [npm, "ci", "--no-audit", "--no-fund", "--silent"], cwd=HERE, check=True
        )
    return node

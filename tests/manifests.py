"""Render the Kubernetes manifests the way `kubectl apply -k` would, offline.

The dev overlay reads Secrets that `make env` writes (git-ignored), so each build runs on a
copy of deploy/k8s with freshly generated ones. Three installations are built: the dev
overlay, the aws overlay (both with KEDA) and aws with the HPA alternative for workers.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
VARIANTS = ("dev", "aws", "aws-hpa")

# The HPA alternative: the aws overlay's resources with plain HPAs instead of KEDA.
HPA_VARIANT = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: darkroom
resources: [../../base]
components: [../../components/hpa-workers]
"""


# The Darkroom services as the deploy files name them.
SERVICES = ("gateway", "ingest-worker", "thumbnail-worker", "notifier")
WORKERS = SERVICES[1:]


def make_env() -> ModuleType:
    """deploy/make_env.py, the one generator of credentials (a script, not a package)."""
    spec = importlib.util.spec_from_file_location("make_env", DEPLOY / "make_env.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def need_kubectl() -> str:
    return require_tool("kubectl", "the kustomize builds cannot be rendered")


@functools.cache
def _render(variant: str, kubectl: str) -> tuple[dict[str, Any], ...]:
    env_module = make_env()
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "k8s"
        shutil.copytree(DEPLOY / "k8s", tree, ignore=shutil.ignore_patterns("secrets"))
        secrets = tree / "overlays" / "dev" / "secrets"
        secrets.mkdir()
        env = env_module.generate()
        for name, text in env_module.kubernetes_files(env).items():
            (secrets / name).write_text(text)
        (secrets / "definitions.json").write_text(json.dumps({"users": []}))
        (tree / "overlays" / "aws-hpa").mkdir()
        (tree / "overlays" / "aws-hpa" / "kustomization.yaml").write_text(HPA_VARIANT)
        built = subprocess.run(  # noqa: S603 (kubectl from PATH, our own arguments)
            [kubectl, "kustomize", str(tree / "overlays" / variant)],
            capture_output=True,
            text=True,
            check=False,
        )
    assert built.returncode == 0, built.stderr
    return tuple(d for d in yaml.safe_load_all(built.stdout) if d)


def render(variant: str) -> list[dict[str, Any]]:
    """Every object `kubectl apply -k deploy/k8s/overlays/<variant>` would send."""
    return list(_render(variant, need_kubectl()))


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def darkroom_owned(doc: dict[str, Any]) -> bool:
    """Darkroom's own objects, not the dev overlay's in-cluster servers."""
    labels = doc["metadata"].get("labels", {})
    return bool(labels.get("app.kubernetes.io/part-of") == "darkroom")


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    pod = workload["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


def setting_names() -> set[str]:
    from shared.settings import Settings

    return {f"DARKROOM_{name.upper()}" for name in Settings.model_fields}


# Settings the deploy files already set for the render memory budget, which the thumbnail
# worker reads once it exists; until then they are only checked to be numbers.
ARRIVING_SETTINGS = {"DARKROOM_RENDER_MEMORY_MB"}


def settings_from(env: dict[str, Any]) -> Any:
    """Validate an environment block the way a service would at start-up."""
    from shared.settings import Settings

    env = dict(env)
    names = setting_names()
    unknown = {k for k in env if k.startswith("DARKROOM_")} - names - ARRIVING_SETTINGS
    assert not unknown, f"not settings: {unknown}"
    for name in (ARRIVING_SETTINGS - names) & set(env):
        assert str(env.pop(name)).isdigit(), name
    values = {k.removeprefix("DARKROOM_").lower(): v for k, v in env.items() if v != ""}
    return Settings(**values)

"""deploy/k8s rendered with the real kustomize (`kubectl kustomize`), and lookups into it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml
from serve_helpers import PROJECT_ROOT

K8S = PROJECT_ROOT / "deploy" / "k8s"
ADAPTER_VALUES = K8S / "monitoring" / "prometheus-adapter-values.yaml"
ENTRYPOINT = PROJECT_ROOT / "docker" / "entrypoint.sh"
SERVING = ("overlays/cpu", "overlays/gpu")
KUSTOMIZATIONS = (*SERVING, "kserve", "training")
PRIMARY_COMPONENT = "components/primary-model/kustomization.yaml"
# Kinds no Kubernetes schema covers: Prometheus Operator's and KServe's custom resources.
CUSTOM_KINDS = {"ServiceMonitor", "ServingRuntime", "InferenceService"}


def render(root: Path, kustomization: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise RuntimeError("kubectl not found: it renders deploy/k8s (`kubectl kustomize`)")
    result = subprocess.run(
        [kubectl, "kustomize", str(root / kustomization)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {kustomization}: {result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(docs: list[dict], kind: str, name: str | None = None) -> dict:
    hits = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(hits) == 1, f"{len(hits)} {kind} {name or ''} rendered"
    return hits[0]


def container(pod_spec: dict, name: str) -> dict:
    return next(c for c in pod_spec["containers"] if c["name"] == name)


def primary_model(docs: list[dict]) -> str:
    return find(docs, "ConfigMap", "classifier-primary-model")["data"]["PRIMARY_MODEL"]


def entrypoint(script: str) -> str:
    """stdout of `script` run with docker/entrypoint.sh's variables and functions defined."""
    return subprocess.run(
        ["bash", "-c", f'source "{ENTRYPOINT}"; {script}'],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip


def adapter_rule() -> dict:
    (rule,) = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]
    return rule

"""deploy/k8s offline: kustomize renders, the Kubernetes 1.32 schema, and the cross-references
a schema cannot see (ports, paths, names, labels) against serve, the entrypoint and train."""

from __future__ import annotations

import inspect
import re
import shlex
import shutil
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
from deploy_helpers import (
    CUSTOM_KINDS,
    ENTRYPOINT,
    K8S,
    KUSTOMIZATIONS,
    PRIMARY_COMPONENT,
    SERVING,
    adapter_rule,
    container,
    entrypoint,
    find,
    primary_model,
    render,
)
from serve_helpers import PROJECT_ROOT
from torch.distributed.run import get_args_parser

from contract.config import load_config
from serve.install import MALLOC_ENV
from serve.server import TritonServer
from train.config import TrainConfig
from train.run import build_config, parse_args

K8S_VERSION = "1.32.0"  # the schema every core object must pass, strictly (no unknown fields)
TRITON_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
EXPECTED_KINDS = {
    "overlays/cpu": {"ServiceAccount", "ConfigMap", "Deployment", "Service",
                     "PodDisruptionBudget", "ServiceMonitor", "HorizontalPodAutoscaler"},
    "kserve": {"ServiceAccount", "ConfigMap", "ServingRuntime", "InferenceService"},
    "training": {"PersistentVolumeClaim", "Service", "Job"},
}  # fmt: skip
EXPECTED_KINDS["overlays/gpu"] = EXPECTED_KINDS["overlays/cpu"]


def strict(doc: dict) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def as_pod(*containers: dict) -> dict:
    """Containers embedded in a custom resource, checked with the core Pod schema."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "embedded"},
            "spec": {"containers": list(containers)}}  # fmt: skip


def triton(docs: list[dict]) -> tuple[dict, dict]:
    """(pod spec, triton container) of the serving Deployment."""
    pod = find(docs, "Deployment", "classifier-triton")["spec"]["template"]["spec"]
    return pod, container(pod, "triton")


def subset(labels: dict, of: dict) -> bool:
    return labels.items() <= of.items()


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_renders_the_expected_objects(rendered, name):
    assert {d["kind"] for d in rendered[name]} == EXPECTED_KINDS[name]


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_core_objects_pass_the_kubernetes_schema(rendered, name):
    checked = [d["kind"] for d in rendered[name] if d["kind"] not in CUSTOM_KINDS]
    for doc in rendered[name]:
        if doc["kind"] not in CUSTOM_KINDS:
            strict(doc)  # raises on a wrong type, a missing or an unknown field
    assert checked


def test_service_monitor_fields(rendered):
    for name in SERVING:
        docs = rendered[name]
        monitor = find(docs, "ServiceMonitor")
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        strict({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                "metadata": {"name": "selector"},
                "spec": {"selector": monitor["spec"]["selector"]}})  # fmt: skip
        service = find(docs, "Service", "classifier-triton")
        assert subset(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
        # Triton's metrics server answers any path: only serve's own URL says which is meant.
        assert endpoint["path"] == urlsplit(TritonServer(K8S, models=["m"]).metrics_url).path
        assert re.fullmatch(r"\d+[sm]", endpoint["interval"])


def test_kserve_fields(rendered):
    docs = rendered["kserve"]
    runtime, isvc = find(docs, "ServingRuntime"), find(docs, "InferenceService")
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1"
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    (server,) = runtime["spec"]["containers"]
    assert server["name"] == "kserve-container"  # the container KServe fills in
    strict(as_pod(server))
    predictor = isvc["spec"]["predictor"]
    model = dict(predictor["model"])
    assert model.pop("runtime") == runtime["metadata"]["name"]
    assert model.pop("modelFormat")["name"] in {
        f["name"] for f in runtime["spec"]["supportedModelFormats"]
    }
    assert model.pop("storageUri").startswith("s3://")
    strict(as_pod({"name": server["name"], **model}))  # the probes KServe merges into it
    assert predictor["serviceAccountName"] == find(docs, "ServiceAccount")["metadata"]["name"]
    assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    env = {e["name"]: e["value"] for e in server["env"]}
    probes = [
        model[p]["httpGet"]["port"] for p in ("startupProbe", "livenessProbe", "readinessProbe")
    ]
    assert set(probes) == {int(env["HTTP_PORT"])} == {8080}  # where KServe sends HTTP


@pytest.mark.parametrize("name", SERVING)
def test_labels_match_selectors(rendered, name):
    docs = rendered[name]
    deployment = find(docs, "Deployment", "classifier-triton")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = [
        deployment["spec"]["selector"]["matchLabels"],
        find(docs, "Service", "classifier-triton")["spec"]["selector"],
        find(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        *(t["labelSelector"]["matchLabels"]
          for t in deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]),
    ]  # fmt: skip
    for selector in selectors:
        assert selector and subset(selector, pod_labels), selector
    target = find(docs, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        deployment["apiVersion"], deployment["kind"], deployment["metadata"]["name"])  # fmt: skip
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == find(docs, "ServiceAccount")["metadata"]["name"]


@pytest.mark.parametrize("name", SERVING)
def test_ports_are_the_ones_serve_and_the_entrypoint_open(rendered, name):
    defaults = inspect.signature(TritonServer).parameters
    assert {k: defaults[f"{k}_port"].default for k in TRITON_PORTS} == TRITON_PORTS
    script = 'echo "$HTTP_PORT $GRPC_PORT $METRICS_PORT"'
    assert entrypoint(script).split() == [str(p) for p in TRITON_PORTS.values()]
    dockerfile = (PROJECT_ROOT / "Dockerfile.triton").read_text()
    for key, port in TRITON_PORTS.items():
        assert f"{key.upper()}_PORT={port}" in dockerfile
    # The image's tritonserver gets the allocator settings `python -m serve` gives it.
    assert all(f"{k}={v}" in dockerfile for k, v in MALLOC_ENV.items())
    pod, server = triton(rendered[name])
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert ports == TRITON_PORTS
    service = find(rendered[name], "Service", "classifier-triton")
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        k: (v, k) for k, v in TRITON_PORTS.items()
    }
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert server[probe]["httpGet"]["port"] == "http"
    # Without a bind address the entrypoint listens on every interface, as a pod must.
    assert "--http-address=0.0.0.0" in entrypoint('echo "--http-address=$BIND_ADDRESS"')
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert env["MODEL_REPO"] in {m["mountPath"] for m in server["volumeMounts"]}


def test_probes_gate_on_the_primary_ensemble_the_demo_deploys(rendered):
    """The demo's train config names the ensemble (`make optimize` writes <name>)."""
    demo = load_config(TrainConfig, PROJECT_ROOT / "configs" / "default.yaml", []).name
    for name in (*SERVING, "kserve"):
        docs = rendered[name]
        primary = primary_model(docs)
        assert primary == demo
        if name == "kserve":
            probes = find(docs, "InferenceService")["spec"]["predictor"]["model"]
        else:
            probes = triton(docs)[1]
        assert probes["readinessProbe"]["httpGet"]["path"] == f"/v2/models/{primary}/ready"
        assert probes["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
        assert probes["startupProbe"]["httpGet"]["path"] == "/v2/health/live"
    for name in SERVING:  # the entrypoint's healthcheck and serve wait for the same model
        env = {e["name"]: e for e in triton(rendered[name])[1]["env"]}
        ref = env["PRIMARY_MODELS"]["valueFrom"]["configMapKeyRef"]
        configmap = find(rendered[name], "ConfigMap", ref["name"])
        assert configmap["data"][ref["key"]] == primary_model(rendered[name])


def test_the_primary_model_is_one_kustomize_value(tmp_path):
    root = tmp_path / "k8s"
    shutil.copytree(K8S, root)
    component = root / PRIMARY_COMPONENT
    component.write_text(
        component.read_text().replace("PRIMARY_MODEL=default", "PRIMARY_MODEL=photo224")
    )
    for name in (*SERVING, "kserve"):
        docs = render(root, name)
        paths = re.findall(r"/v2/models/[^/\s']+/ready", repr(docs))
        assert paths == ["/v2/models/photo224/ready"], name


@pytest.mark.parametrize("name", SERVING)
def test_pods_run_non_root_on_a_read_only_root(rendered, name):
    pod, _ = triton(rendered[name])
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"]
    assert pod["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    for c in pod["initContainers"] + pod["containers"]:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert c["resources"]["requests"] and c["resources"]["limits"]
        for mount in c["volumeMounts"]:  # everything written goes to an emptyDir
            assert "emptyDir" in volumes[mount["name"]], mount
    _, server = triton(rendered[name])
    assert {m["mountPath"] for m in server["volumeMounts"]} == {"/models", "/tmp", "/dev/shm"}
    (init,) = pod["initContainers"]  # the image's repository, copied where it can be written
    assert init["image"] == server["image"] and init["command"][:2] == ["cp", "-R"]
    assert init["volumeMounts"][0]["name"] == "model-repository"


def test_the_gpu_overlay_asks_for_a_gpu_and_waits_for_the_plan(rendered):
    _, cpu = triton(rendered["overlays/cpu"])
    gpu_pod, gpu = triton(rendered["overlays/gpu"])
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"]
    assert any(t["key"] == "nvidia.com/gpu" for t in gpu_pod["tolerations"])

    def window(c: dict) -> int:
        return c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"]

    assert window(gpu) >= 15 * 60 > window(cpu)  # a TensorRT build takes minutes
    # Extra container args go to tritonserver: only flags `make serve` itself passes.
    flags = TritonServer(PROJECT_ROOT, models=["m"]).command(PROJECT_ROOT)
    assert cpu["args"] and set(cpu["args"]) <= set(flags)
    assert "args" not in gpu  # GPU metrics on, as the entrypoint leaves them


@pytest.mark.parametrize("name", SERVING)
def test_the_grace_period_covers_the_drain(rendered, name):
    pod, server = triton(rendered[name])
    exit_timeout = int(re.search(r"--exit-timeout-secs=(\d+)", ENTRYPOINT.read_text()).group(1))
    pre_stop = server["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pre_stop + exit_timeout


@pytest.mark.parametrize("name", SERVING)
def test_the_autoscaler_uses_the_adapters_metric(rendered, name):
    docs = rendered[name]
    hpa = find(docs, "HorizontalPodAutoscaler")["spec"]
    (metric,) = hpa["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == adapter_rule()["name"]["as"]
    deployment = find(docs, "Deployment", "classifier-triton")
    assert hpa["minReplicas"] == deployment["spec"]["replicas"] <= hpa["maxReplicas"]
    rule = adapter_rule()
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}  # ServiceMonitor labels


def test_the_training_job_runs_torchrun_on_train(rendered, monkeypatch):
    monkeypatch.chdir(PROJECT_ROOT)  # the image's working directory holds configs/
    docs = rendered["training"]
    job, service = find(docs, "Job"), find(docs, "Service")
    pod = job["spec"]["template"]["spec"]
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"]
    assert subset(service["spec"]["selector"], job["spec"]["template"]["metadata"]["labels"])
    assert (
        pod["subdomain"] == service["metadata"]["name"] and service["spec"]["clusterIP"] == "None"
    )
    trainer = container(pod, "train")
    script = trainer["args"][0]
    # The shell's exec line, with the variables the pod's shell would fill in.
    words = shlex.split(script.split("exec ", 1)[1].replace("$NODE_RANK", "1"))
    split = words.index("-m")
    torchrun = get_args_parser().parse_args([*words[1:split], "-m", "train"])
    assert words[0] == "torchrun" and torchrun.node_rank == 1
    assert torchrun.nnodes == str(job["spec"]["completions"])
    assert torchrun.master_addr == f"{job['metadata']['name']}-0.{service['metadata']['name']}"
    assert torchrun.master_port == service["spec"]["ports"][0]["port"]
    assert any(
        e["name"] == "NODE_RANK" and "job-completion-index" in str(e) for e in trainer["env"]
    )
    # The train CLI accepts the rest (--resume as a retry adds it), configs/ as in the image.
    cli = [w for w in words[split + 2 :] if w != "$resume"]
    cfg = build_config(parse_args([*cli, "--resume"]))
    assert cfg.data.root == "/data/fashion-mnist" and cfg.resume
    assert f"/runs/{cfg.name}/last.pt" in script
    mounts = {m["mountPath"]: m["name"] for m in trainer["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    runs = volumes[mounts[cfg.out_dir]]["persistentVolumeClaim"]["claimName"]
    pvc = find(docs, "PersistentVolumeClaim", runs)
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # every rank reads last.pt
    (data,) = pod["initContainers"]
    assert data["command"][-1] == cfg.data.root and mounts["/data"] == "data"

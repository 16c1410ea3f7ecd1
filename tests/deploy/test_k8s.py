"""deploy/k8s/: the Dask Kubernetes operator's resources for a lensdask job.

No Kubernetes cluster here, so the manifests are checked the way the API server and the
operator would see them: against the operator's own CRD schemas (shipped in the
dask-kubernetes wheel) with unknown fields rejected (kubectl's strict field validation),
then rendered into pods by the operator's own code, and the commands in them parsed by the
real command-line parsers (lensdask, dask scheduler, dask worker).
"""

from __future__ import annotations

import copy
import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
DOCKER = ROOT / "deploy" / "docker"
CRD_DIR = "operator/deployment/helm/dask-kubernetes-operator/crds"
NAMESPACE = "survey"


def dask_kubernetes_root() -> Path:
    spec = importlib.util.find_spec("dask_kubernetes")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("dask-kubernetes is not installed (it is in lensdask's test extra)")
    return Path(spec.submodule_search_locations[0])


def strict(schema: Any, *, top: bool = True) -> Any:
    """The CRD's OpenAPI schema with unknown fields rejected, as strict field validation does.

    An object schema with ``properties`` and no ``additionalProperties`` (nor
    ``x-kubernetes-preserve-unknown-fields``) gets ``additionalProperties: false``; at the top,
    ``apiVersion``, ``kind`` and ``metadata`` are the API server's own and always allowed.
    """
    if isinstance(schema, list):
        return [strict(item, top=False) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value, top=False) for key, value in schema.items()}
    if "properties" in schema:
        out["properties"] = {
            name: strict(sub, top=False) for name, sub in schema["properties"].items()
        }
        if top:
            out["properties"] |= {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {"type": "object"},
            }
        if "additionalProperties" not in schema and not schema.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            out["additionalProperties"] = False
    return out


@pytest.fixture(scope="module")
def crd_schemas() -> dict[str, dict[str, Any]]:
    """Kind -> strict openAPIV3Schema of the operator's CRDs, version v1."""
    crds = dask_kubernetes_root() / CRD_DIR
    schemas = {}
    for path in sorted(crds.glob("*.yaml")):
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are 1 MB of YAML
        crd = yaml.load(path.read_text(), Loader=loader)
        assert crd["spec"]["group"] == "kubernetes.dask.org"
        (v1,) = [version for version in crd["spec"]["versions"] if version["name"] == "v1"]
        schemas[crd["spec"]["names"]["kind"]] = strict(v1["schema"]["openAPIV3Schema"])
    assert {"DaskJob", "DaskWorkerGroup", "DaskCluster"} <= set(schemas)
    return schemas


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    """Kind -> the one resource of that kind in deploy/k8s/*.yaml."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["kind"] not in found, f"{path.name}: a second {doc['kind']}"
            found[doc["kind"]] = doc
    assert set(found) == {"DaskJob", "DaskWorkerGroup", "PersistentVolumeClaim"}
    return found


def validate(resource: dict[str, Any], schemas: dict[str, dict[str, Any]]) -> list[str]:
    from jsonschema import Draft7Validator

    validator = Draft7Validator(schemas[resource["kind"]])
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(resource)
    ]


def test_dask_resources_match_the_operator_crds(manifests, crd_schemas):
    for kind in ("DaskJob", "DaskWorkerGroup"):
        resource = manifests[kind]
        assert resource["apiVersion"] == "kubernetes.dask.org/v1"
        assert validate(resource, crd_schemas) == [], kind


def test_schema_check_catches_typos_and_wrong_types(manifests, crd_schemas):
    """The strict schema rejects what the API server would: proof the check above bites."""
    typo = copy.deepcopy(manifests["DaskJob"])
    worker = typo["spec"]["cluster"]["spec"]["worker"]
    worker["replica"] = worker.pop("replicas")
    assert any("replica" in error for error in validate(typo, crd_schemas))
    integer_cpu = copy.deepcopy(manifests["DaskWorkerGroup"])
    container = integer_cpu["spec"]["worker"]["spec"]["containers"][0]
    container["resources"]["requests"]["cpu"] = 4
    assert any("is not of type 'string'" in error for error in validate(integer_cpu, crd_schemas))


def rendered_pods(manifests) -> dict[str, dict[str, Any]]:
    """The pod specs the operator makes from the manifests (its own builder functions)."""
    pytest.importorskip("kopf")
    from dask_kubernetes.operator.controller.controller import (
        build_job_pod_spec,
        build_scheduler_deployment_spec,
        build_worker_deployment_spec,
    )

    job = manifests["DaskJob"]
    name = job["metadata"]["name"]
    cluster = job["spec"]["cluster"]["spec"]
    runner = build_job_pod_spec(name, name, NAMESPACE, job["spec"]["job"]["spec"], {}, {})
    scheduler = build_scheduler_deployment_spec(name, cluster["scheduler"]["spec"], {}, {})
    cpu = build_worker_deployment_spec(
        f"{name}-default", NAMESPACE, name, "abc12", cluster["worker"]["spec"], {}, {}
    )
    group = manifests["DaskWorkerGroup"]
    gpu = build_worker_deployment_spec(
        group["metadata"]["name"], NAMESPACE, name, "def34", group["spec"]["worker"]["spec"], {}, {}
    )
    return {
        "runner": runner["spec"],
        "scheduler": scheduler["spec"]["template"]["spec"],
        "cpu-worker": cpu["spec"]["template"]["spec"],
        "gpu-worker": gpu["spec"]["template"]["spec"],
    }


def expand(args: list[str], env: list[dict[str, str]]) -> list[str]:
    """Kubernetes' $(VAR) expansion of a container's args with the container's env."""
    values = {item["name"]: item["value"] for item in env}
    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: values[m[1]], a) for a in args]


def test_gpu_workers_join_the_jobs_cluster(manifests):
    from dask_kubernetes.constants import SCHEDULER_NAME_TEMPLATE

    job = manifests["DaskJob"]
    name = job["metadata"]["name"]
    assert manifests["DaskWorkerGroup"]["spec"]["cluster"] == name
    service = job["spec"]["cluster"]["spec"]["scheduler"]["service"]
    assert service["selector"] == {
        "dask.org/cluster-name": name,
        "dask.org/component": "scheduler",
    }
    assert service["type"] == "ClusterIP"  # the dashboard is not exposed outside the cluster
    assert {port["port"] for port in service["ports"]} == {8786, 8787}
    assert SCHEDULER_NAME_TEMPLATE.format(cluster_name=name) == f"{name}-scheduler"


def test_runner_runs_lensdask_on_the_jobs_scheduler(manifests):
    from lensdask.cli import run_cmd
    from lensdask.cluster import ClusterSpec

    (container,) = rendered_pods(manifests)["runner"]["containers"]
    args = expand(container["args"], container["env"])
    name = manifests["DaskJob"]["metadata"]["name"]
    address = f"tcp://{name}-scheduler.{NAMESPACE}.svc.cluster.local:8786"
    assert args[:3] == ["lensdask", "run", "/jobs/demo.yaml"]
    assert args[args.index("--cluster") + 1] == address
    assert ClusterSpec(kind=address).kind == address
    # /jobs is the ConfigMap made from the repository's jobs/ folder.
    local = [str(ROOT / "jobs" / arg[6:]) if arg.startswith("/jobs/") else arg for arg in args[2:]]
    context = run_cmd.make_context("run", local)
    assert context.params["cluster"] == address
    assert context.params["job"] == ROOT / "jobs" / "demo.yaml"


def test_scheduler_and_worker_commands_parse(manifests):
    from distributed.cli.dask_scheduler import main as scheduler_cli
    from distributed.cli.dask_worker import main as worker_cli

    pods = rendered_pods(manifests)
    (scheduler,) = pods["scheduler"]["containers"]
    assert scheduler["args"][:2] == ["dask", "scheduler"]
    params = scheduler_cli.make_context("scheduler", scheduler["args"][2:]).params
    ports = {port["name"]: port["containerPort"] for port in scheduler["ports"]}
    assert int(params["port"]) == ports["tcp-comm"] == 8786
    assert params["dashboard_address"].rsplit(":", 1)[1] == str(ports["http-dashboard"])
    (worker,) = pods["cpu-worker"]["containers"]
    args = expand(worker["args"], worker["env"])
    assert args[:2] == ["dask", "worker"]
    params = worker_cli.make_context("worker", args[2:]).params
    assert params["name"].startswith("lensdask-demo-default-worker-")
    # One worker process per pod: threads = CPUs, Dask's memory limit within the pod's.
    assert params["nthreads"] == int(worker["resources"]["requests"]["cpu"])
    assert memory_bytes(params["memory_limit"]) <= memory_bytes(
        worker["resources"]["limits"]["memory"]
    )


def test_gpu_workers_declare_the_resource_training_asks_for(manifests):
    (worker,) = rendered_pods(manifests)["gpu-worker"]["containers"]
    args = expand(worker["args"], worker["env"])
    assert args[:3] == ["dask", "cuda", "worker"]
    assert args[args.index("--resources") + 1] == "GPU=1"  # as LocalCUDACluster in cluster.py
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert args[args.index("--name") + 1].startswith("lensdask-demo-gpu-worker-")
    assert memory_bytes(args[args.index("--memory-limit") + 1]) <= memory_bytes(
        worker["resources"]["limits"]["memory"]
    )


def memory_bytes(quantity: str) -> int:
    """Bytes of a Kubernetes quantity (``8Gi``) or a Dask size (``8GiB``)."""
    from dask.utils import parse_bytes

    return parse_bytes(quantity + "B" if quantity.endswith("i") else quantity)


def test_every_pod_has_the_backend_env_and_the_shared_data_volume(manifests):
    claim = manifests["PersistentVolumeClaim"]
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    for role, pod in rendered_pods(manifests).items():
        if role == "scheduler":
            continue
        (container,) = pod["containers"]
        env = {item["name"]: item["value"] for item in container["env"]}
        assert env["KERAS_BACKEND"] == "tensorflow", role
        assert env["TF_ENABLE_ONEDNN_OPTS"] == "1", role  # oneDNN: 1.5x CPU inference
        claims = {
            volume["name"]: volume["persistentVolumeClaim"]["claimName"]
            for volume in pod["volumes"]
            if "persistentVolumeClaim" in volume
        }
        mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
        (data,) = [name for name, claim_name in claims.items() if claim_name == "lensdask-data"]
        assert claim["metadata"]["name"] == "lensdask-data"
        # Relative workdirs resolve alike on the runner and every worker.
        assert container["workingDir"] == mounts[data] == "/data", role
    runner = rendered_pods(manifests)["runner"]
    assert runner["restartPolicy"] == "Never"
    (jobs,) = [volume for volume in runner["volumes"] if "configMap" in volume]
    assert jobs["configMap"]["name"] == "lensdask-jobs"
    (container,) = runner["containers"]
    assert {"name": "jobs", "mountPath": "/jobs", "readOnly": True} in container["volumeMounts"]


def test_images_are_the_ones_deploy_docker_builds(manifests):
    tags = {}
    for dockerfile in ("Dockerfile", "Dockerfile.gpu"):
        text = (DOCKER / dockerfile).read_text()
        (tag,) = re.findall(
            rf"docker build -f deploy/docker/{re.escape(dockerfile)} -t (\S+)", text
        )
        tags[dockerfile] = tag
    pods = rendered_pods(manifests)
    for role in ("runner", "scheduler", "cpu-worker"):
        assert pods[role]["containers"][0]["image"] == tags["Dockerfile"], role
    assert pods["gpu-worker"]["containers"][0]["image"] == tags["Dockerfile.gpu"]

"""The cluster configs of clusters/: the launcher YAMLs pass the checks `ray up` makes, the KubeRay manifests carry
what KubeRay needs, token auth is on everywhere, and local_cluster.sh really starts, reports and stops a cluster."""
from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import jsonschema
import pytest
import yaml

from cluster_harness import ROOT, SCRIPT, LocalCluster
from uer_ray.cli import build_parser

CLUSTERS = ROOT / "clusters"
LAUNCHER = [CLUSTERS / "aws.yaml", CLUSTERS / "gcp.yaml"]
TORCH_PIN = re.search(r"^TORCH \?= (\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def ray_schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


# ------------------------------------------------------------------------------------------- cluster launcher --
@pytest.mark.parametrize("path", LAUNCHER, ids=lambda p: p.stem)
def test_launcher_config_passes_ray_ups_checks(path):
    config = load(path)
    jsonschema.validate(config, ray_schema())  # the schema file `ray up` validates against
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))  # what `ray up` runs: defaults merged, then validated


def test_the_schema_check_is_not_vacuous():
    broken = load(LAUNCHER[0])
    broken["available_node_types"]["gpu_worker"]["min_worker"] = 0  # a typo `ray up` must refuse
    with pytest.raises(jsonschema.ValidationError, match="min_worker"):
        jsonschema.validate(broken, ray_schema())


@pytest.mark.parametrize("path", LAUNCHER, ids=lambda p: p.stem)
def test_launcher_has_a_cpu_head_and_autoscaled_gpu_and_cpu_groups(path):
    config = load(path)
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0}
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    assert set(workers) == {"gpu_worker", "cpu_worker"}
    gpu, cpu = workers["gpu_worker"], workers["cpu_worker"]
    # GCP states a node type's GPUs; AWS detects them from a GPU instance family (p4d, p5, g6, ...)
    assert gpu["resources"].get("GPU", 0) > 0 or re.match(r"[pg]\d", gpu["node_config"]["InstanceType"])
    assert not cpu["resources"].get("GPU") and not re.match(r"[pg]\d", cpu["node_config"].get("InstanceType", ""))
    for group in workers.values():
        assert group["min_workers"] == 0 < group["max_workers"]
    assert sum(t["max_workers"] for t in workers.values()) <= config["max_workers"]


@pytest.mark.parametrize("path", LAUNCHER, ids=lambda p: p.stem)
def test_launcher_installs_pinned_torch_then_the_mounted_project(path):
    config = load(path)
    assert config["setup_commands"] == [f"pip install -q {TORCH_PIN}", "pip install -q ~/uer-ray"]
    assert config["file_mounts"]["~/uer-ray"] == "."
    # the token every node and client shares, and the node environment that carries the secrets
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert "~/.uer-ray/node.env" in config["file_mounts"]


@pytest.mark.parametrize("path", LAUNCHER, ids=lambda p: p.stem)
def test_launcher_starts_every_node_with_token_auth(path):
    config = load(path)
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in config[key] if "ray start" in c]
        assert start and all("export RAY_AUTH_MODE=token;" in c for c in start), key
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start


def test_no_cluster_config_disables_token_auth():
    for path in CLUSTERS.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert not re.search(r"RAY_AUTH_MODE=disabled|mode:\s*disabled", text), path


# -------------------------------------------------------------------------------------------------- KubeRay --
def kuberay(name: str) -> dict:
    return load(CLUSTERS / "kuberay" / name)


def cluster_specs() -> list[tuple[str, dict]]:
    return [("raycluster", kuberay("raycluster.yaml")["spec"]), ("rayjob", kuberay("rayjob.yaml")["spec"]["rayClusterSpec"])]


def containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


@pytest.mark.parametrize("name,kind", [("raycluster.yaml", "RayCluster"), ("rayjob.yaml", "RayJob")])
def test_kuberay_manifest_kind(name, kind):
    manifest = kuberay(name)
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == kind and manifest["metadata"]["name"]


@pytest.mark.parametrize("which,spec", cluster_specs(), ids=["raycluster", "rayjob"])
def test_kuberay_cluster_spec_has_what_kuberay_requires(which, spec):
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["authOptions"]["mode"] == "token"
    assert containers(spec["headGroupSpec"]) and isinstance(spec["headGroupSpec"]["rayStartParams"], dict)
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"gpu", "cpu"}
    for group in groups.values():
        assert {"groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams", "template"} <= set(group)
        assert group["minReplicas"] == 0 <= group["replicas"] <= group["maxReplicas"]
    for group in [spec["headGroupSpec"], *groups.values()]:
        for container in containers(group):
            assert container["image"]
            assert container["resources"]["requests"] and container["resources"]["limits"]
    gpu_limits = containers(groups["gpu"])[0]["resources"]["limits"]
    assert int(gpu_limits["nvidia.com/gpu"]) > 0
    assert "nvidia.com/gpu" not in containers(groups["cpu"])[0]["resources"]["limits"]


@pytest.mark.parametrize("which,spec", cluster_specs(), ids=["raycluster", "rayjob"])
def test_kuberay_secrets_come_from_a_secret_never_inline(which, spec):
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        for container in containers(group):
            env = {e["name"]: e for e in container["env"]}
            assert {"WANDB_API_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(env)
            for item in env.values():
                assert "value" not in item and "secretKeyRef" in item["valueFrom"], item


def test_rayjob_runs_the_same_cluster_as_raycluster():
    assert kuberay("rayjob.yaml")["spec"]["rayClusterSpec"] == kuberay("raycluster.yaml")["spec"]


def test_rayjob_entrypoint_runs_launch_py_stages():
    spec = kuberay("rayjob.yaml")["spec"]
    assert spec["entrypoint"].startswith("python launch.py ")
    for command in spec["entrypoint"].split(" && "):
        words = shlex.split(command)
        assert words[:2] == ["python", "launch.py"]
        args = build_parser().parse_args(words[2:])  # a stage launch.py knows, with arguments it accepts
        assert (ROOT / args.config).is_file()
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env == {"working_dir": "/home/ray/uer-ray"}  # no env_vars: the dashboard would show them
    assert spec["shutdownAfterJobFinishes"] is True


# ----------------------------------------------------------------------------------------- local_cluster.sh --
def test_local_cluster_script_parses():
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def http_status(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def wait_for_nodes(cluster: LocalCluster, count: int, timeout_s: float = 30) -> str:
    """`local_cluster.sh status` once it reports ``count`` active nodes (the autoscaler's view lags a few seconds)."""
    deadline = time.monotonic() + timeout_s
    while True:
        done = cluster.script("status")
        assert done.returncode == 0, done.stdout + done.stderr
        # right after start the autoscaler may not have published a report yet ("No cluster status")
        active = done.stdout.split("Active:")[1].split("Pending:")[0] if "Active:" in done.stdout else ""
        if active.count("node_") == count or time.monotonic() > deadline:
            return done.stdout
        time.sleep(1)


def test_local_cluster_starts_reports_and_stops_with_token_auth():
    cluster = LocalCluster(workers=1, cpus=1)
    try:
        cluster.start()
        status = wait_for_nodes(cluster, 2)
        assert "head: running" in status and "node2: running" in status
        assert re.search(r"0\.0/1\.0 node2", status), status  # node2's own custom resource
        token = cluster.token_path.read_text()
        jobs = f"{cluster.address}/api/jobs/"
        assert http_status(jobs) == 401  # token auth is on
        assert http_status(jobs, "not-the-token") == 403
        assert http_status(jobs, token) == 200
        assert cluster.client().list_jobs() == []  # launch.py submit's client finds the token by itself
    finally:
        try:
            cluster.stop()
            print(f"\nlocal_cluster.sh: start {cluster.start_s:.1f}s, stop {cluster.stop_s:.1f}s")
            assert cluster.leftover_pids() == []
            assert cluster.script("status").returncode == 3  # "not running"
        finally:
            cluster.remove()
    assert cluster.start_s < 60 and cluster.stop_s < 60  # fast enough to stay out of the slow marker

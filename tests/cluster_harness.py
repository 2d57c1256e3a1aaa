"""Multi-node test harness: real processes, all on loopback, all stopped whatever happens.

- ``s3`` fixture: an S3-compatible server (moto) as a subprocess, one bucket, and the environment clients need.
- ``cluster`` fixture: a 2-node Ray cluster started by the real CLI through ``clusters/local_cluster.sh`` (head with
  the dashboard on 127.0.0.1, a second node with its own custom resource ``node2``, token auth on, the project's
  venv), each node given the S3 environment; stopped at the end, and no process of it left behind.
- ``run_job``: submit through ``JobSubmissionClient`` (``uer_ray.submit``) and wait for a terminal status.

Import the fixtures into a test module: ``from cluster_harness import cluster, s3  # noqa: F401``.
Nothing here runs ``ray stop``: it kills every Ray on the machine, other people's included.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "clusters" / "local_cluster.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout_s: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s")


def stop_process(process: subprocess.Popen, timeout_s: float = 10) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ---------------------------------------------------------------------------------------------------------- S3 --
@dataclass
class S3Server:
    endpoint: str
    bucket: str
    env: dict[str, str]  # what a client (boto3, pyarrow, a Ray node) needs to reach the server

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"], region_name=self.env["AWS_DEFAULT_REGION"])

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


@contextmanager
def s3_server(bucket: str = "uer-test"):
    """moto's server on a free loopback port with ``bucket`` created; always stopped at the end."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, 30, process)
        endpoint = f"http://127.0.0.1:{port}"
        env = {
            "AWS_ENDPOINT_URL": endpoint,  # boto3 and pyarrow both read it
            # moto accepts any key; dummies keep real credentials out (long enough to be recognised as secrets)
            "AWS_ACCESS_KEY_ID": "uer-harness-dummy-key-id",
            "AWS_SECRET_ACCESS_KEY": "uer-harness-dummy-secret-key",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",  # no 1-second probe of an instance-metadata service
        }
        server = S3Server(endpoint, bucket, env)
        server.client().create_bucket(Bucket=bucket)
        yield server
    finally:
        stop_process(process)


# ----------------------------------------------------------------------------------------------------- cluster --
class LocalCluster:
    """``clusters/local_cluster.sh`` with its own directory, free ports and token, so that it never meets another
    Ray on this machine."""

    def __init__(self, workers: int = 1, cpus: int = 1, env: dict[str, str] | None = None):
        # Short, under /tmp: Ray's Unix sockets live below it (about 107 characters at most).
        self.dir = Path(tempfile.mkdtemp(prefix="uerc", dir="/tmp"))
        self.token_path = self.dir / "auth_token"
        self.port, self.dashboard_port = free_port(), free_port()
        self.env = {
            **os.environ,
            **(env or {}),
            "UER_PYTHON": str(Path(sys.executable)),  # the venv running the tests (its bin/ goes first on PATH)
            "UER_CLUSTER_DIR": str(self.dir / "c"),
            "UER_CLUSTER_WORKERS": str(workers),
            "UER_CLUSTER_CPUS": str(cpus),
            "UER_CLUSTER_PORT": str(self.port),
            "UER_DASHBOARD_PORT": str(self.dashboard_port),
            "RAY_AUTH_TOKEN_PATH": str(self.token_path),  # a token of its own: ~/.ray stays untouched
        }
        self.env.pop("RAY_AUTH_TOKEN", None)
        self.env.pop("RAY_ADDRESS", None)
        self.start_s = self.stop_s = self.cluster_id = None

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def script(self, command: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(SCRIPT), command], env=self.env, capture_output=True, text=True,
                              timeout=timeout_s)

    def start(self) -> None:
        started = time.monotonic()
        done = self.script("start")
        self.start_s = time.monotonic() - started
        if done.returncode != 0:
            raise RuntimeError(f"local_cluster.sh start failed:\n{done.stdout}\n{done.stderr}")
        self.cluster_id = (self.dir / "c" / "cluster_id").read_text().strip()

    def stop(self) -> None:
        started = time.monotonic()
        done = self.script("stop")
        self.stop_s = time.monotonic() - started
        if done.returncode != 0:
            raise RuntimeError(f"local_cluster.sh stop failed:\n{done.stdout}\n{done.stderr}")

    def remove(self) -> None:
        """Delete the cluster's directory (logs, Ray's session files, the token)."""
        shutil.rmtree(self.dir, ignore_errors=True)

    def processes(self) -> dict[int, str]:
        """pid -> command line of every process carrying this cluster's UER_CLUSTER_ID (nodes, workers, drivers)."""
        marker = f"UER_CLUSTER_ID={self.cluster_id}".encode()
        found = {}
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and marker in (proc / "environ").read_bytes().split(b"\0"):
                    found[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:  # gone, or not ours
                pass
        return found

    def leftover_pids(self) -> list[int]:
        return sorted(self.processes())

    def client_env(self) -> dict[str, str]:
        """What a client process (``ray`` CLI, ``launch.py submit``) needs to reach this cluster."""
        return {**self.env, "RAY_AUTH_MODE": "token", "RAY_API_SERVER_ADDRESS": self.address}

    def client(self):
        """A ``JobSubmissionClient`` that sends this cluster's token."""
        from uer_ray.submit import connect

        previous = os.environ.get("RAY_AUTH_TOKEN_PATH")
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(self.token_path)  # where Ray's token loader looks, in this process
        try:
            return connect(self.address)  # the client keeps the header it was given
        finally:
            if previous is None:
                del os.environ["RAY_AUTH_TOKEN_PATH"]
            else:
                os.environ["RAY_AUTH_TOKEN_PATH"] = previous

    def alive_actors(self) -> list[str]:
        """Class names of the cluster's ALIVE actors, through the state API (``ray list actors``) with the token."""
        done = subprocess.run(
            [str(Path(sys.executable).parent / "ray"), "list", "actors", "--address", self.gcs_address,
             "--filter", "state=ALIVE", "--format", "json", "--limit", "1000"],
            env=self.client_env(), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        if done.stdout.startswith("No resource in the cluster"):  # the CLI's words for an empty list
            return []
        return [actor["class_name"] for actor in json.loads(done.stdout)]


@contextmanager
def ray_cluster(env: dict[str, str] | None = None, workers: int = 1, cpus: int = 1):
    """A running LocalCluster; stopped (and its directory removed) at the end whatever happened, and checked to have
    left no process behind."""
    cluster = LocalCluster(workers, cpus, env)
    try:
        cluster.start()
        yield cluster
    finally:
        try:
            cluster.stop()
            if cluster.cluster_id:
                assert cluster.leftover_pids() == [], "processes of the cluster outlived local_cluster.sh stop"
        finally:
            cluster.remove()


# ------------------------------------------------------------------------------------------------------- jobs --
@dataclass
class JobResult:
    job_id: str
    status: str
    logs: str
    seconds: float


def run_job(cluster: LocalCluster, stage_args: list[str], env: dict[str, str] | None = None,
            timeout_s: float = 600) -> JobResult:
    """Submit ``python launch.py <stage_args>`` with the project as working_dir, wait for SUCCEEDED / FAILED / STOPPED,
    return the status and the logs; a job still running at the timeout is stopped."""
    from uer_ray.submit import submit, wait

    client = cluster.client()
    started = time.monotonic()
    job_id = submit(client, stage_args, working_dir=str(ROOT), env=env)
    try:
        status = wait(client, job_id, timeout_s=timeout_s)
    except TimeoutError:
        client.stop_job(job_id)
        raise
    return JobResult(job_id, str(status), client.get_job_logs(job_id), time.monotonic() - started)


# --------------------------------------------------------------------------------------------------- fixtures --
@pytest.fixture(scope="module")
def s3():
    with s3_server() as server:
        yield server


@pytest.fixture(scope="module")
def cluster(s3):
    """Head (1 CPU) + node2 (1 CPU, resource node2): what fits a 2-CPU machine. Every node gets the S3 environment
    and W&B offline; Train's controller polls often, so reports do not wait 2 s each."""
    env = {**s3.env, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"}
    with ray_cluster(env, workers=1, cpus=1) as running:
        print(f"\n[cluster_harness] 2-node cluster up in {running.start_s:.1f}s", file=sys.stderr)
        yield running
    print(f"\n[cluster_harness] stopped in {running.stop_s:.1f}s", file=sys.stderr)

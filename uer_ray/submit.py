"""``launch.py submit``: run a stage on a Ray cluster through Ray's Job Submission API.

The project directory travels as the job's ``working_dir`` (what ``.gitignore`` and ``EXCLUDED`` leave out stays
home) and the job runs ``python launch.py <stage> ...`` on the cluster. Token authentication: the client sends the
token Ray's own clients would find (``RAY_AUTH_TOKEN``, else the file ``RAY_AUTH_TOKEN_PATH``, else
``~/.ray/auth_token``) whatever ``RAY_AUTH_MODE`` says here.

Secrets never travel with a job: a runtime_env and job metadata are shown by the dashboard and ``ray job list`` to
anyone who can reach the cluster, so a submission carrying one (by its name, e.g. ``WANDB_API_KEY``, or by its value)
is refused. The cluster's nodes get secrets from their own environment (the launcher's node env file, a Kubernetes
Secret).
"""
from __future__ import annotations

import asyncio
import os
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Iterable, TextIO

import yaml

# Build outputs, local runs and W&B files stay home (on top of .gitignore, which Ray honours too).
EXCLUDED = [".git", ".venv", "runs/", "wandb/", ".pytest_cache/", "**/__pycache__/", "*.egg-info/", ".env"]
# Variable names that hold credentials: WANDB_API_KEY, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
# HF_TOKEN, RAY_AUTH_TOKEN, GOOGLE_APPLICATION_CREDENTIALS, *_PASSWORD, ...
SECRET_NAME = re.compile(r"API_KEY|ACCESS_KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL", re.IGNORECASE)
MIN_SECRET_LENGTH = 8  # shorter values ("1", "true") would match by accident


class SubmitError(ValueError):
    """A submission that cannot go ahead; the CLI prints it as one line."""


def secret_values(environ: dict[str, str]) -> dict[str, str]:
    """Values of the submitter's secret-named variables -> their names, to recognise a secret under another name."""
    return {value: name for name, value in environ.items() if SECRET_NAME.search(name) and len(value) >= MIN_SECRET_LENGTH}


def check_no_secrets(runtime_env: dict, metadata: dict, entrypoint: str) -> None:
    """Refuse a job whose runtime_env env_vars, metadata or entrypoint carry a secret, by name or by value."""
    known = secret_values(dict(os.environ))
    places = [(f"runtime_env env_vars {name}", name, str(value)) for name, value in runtime_env.get("env_vars", {}).items()]
    places += [(f"metadata {name}", name, str(value)) for name, value in metadata.items()]
    for where, name, value in places:
        if SECRET_NAME.search(name):
            raise SubmitError(
                f"{where}: looks like a secret, and a job's runtime_env and metadata are visible to anyone who can "
                "reach the dashboard; give the cluster's nodes the secret instead (clusters/README.md)"
            )
    texts = [(where, value) for where, _, value in places] + [("the entrypoint", entrypoint)]
    for where, text in texts:
        for value, name in known.items():
            if value in text:
                raise SubmitError(f"{where} contains the value of {name}; secrets reach a cluster through its nodes' "
                                  "environment, never through a job (clusters/README.md)")


def parse_env(items: Iterable[str]) -> dict[str, str]:
    env = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SubmitError(f"--env {item!r}: expected NAME=VALUE")
        env[name] = value
    return env


def build_runtime_env(working_dir: str, runtime_env_file: str | None = None, env: dict[str, str] | None = None) -> dict:
    """The job's runtime_env: the optional YAML file (pip requirements, env_vars, ...), ``working_dir``, ``EXCLUDED``
    added to its excludes, ``env`` added to its env_vars."""
    runtime_env: dict = {}
    if runtime_env_file:
        path = Path(runtime_env_file)
        if not path.is_file():
            raise SubmitError(f"runtime_env file not found: {path}")
        runtime_env = yaml.safe_load(path.read_text()) or {}
        if not isinstance(runtime_env, dict):
            raise SubmitError(f"{path}: a runtime_env must be a YAML mapping")
    if not Path(working_dir).is_dir():
        raise SubmitError(f"working dir not found: {working_dir}")
    runtime_env["working_dir"] = str(working_dir)
    runtime_env["excludes"] = list(dict.fromkeys([*EXCLUDED, *runtime_env.get("excludes", [])]))
    if env:
        runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), **env}
    return runtime_env


def stage_entrypoint(stage_args: list[str], working_dir: str) -> str:
    """``python launch.py <stage> ...`` after checking the stage's arguments here: a typo fails now, not after an
    upload, and a ``--config`` must lie inside the working dir, the only files the cluster gets."""
    from uer_ray.cli import build_parser

    if stage_args[:1] == ["--"]:
        stage_args = stage_args[1:]
    if not stage_args:
        raise SubmitError("no stage given: launch.py submit --address URL -- pretrain --config jobs/<job>.yaml")
    if stage_args[0] == "submit":
        raise SubmitError("a submitted job cannot itself submit")
    args = build_parser().parse_args(stage_args)  # argparse's own message and exit status 2 on a bad argument
    config = getattr(args, "config", None)
    if config:
        root = Path(working_dir).resolve()
        path = (root / config).resolve()
        if not path.is_file() or root not in path.parents:
            raise SubmitError(f"--config {config}: not a file inside the working dir {root}, so the cluster would not get it")
    return shlex.join(["python", "launch.py", *stage_args])


def auth_headers() -> dict[str, str]:
    """``{"authorization": "Bearer <token>"}`` from wherever Ray's clients look, or ``{}`` when there is no token."""
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path and not os.environ.get("RAY_AUTH_TOKEN") and not (Path(path).is_file() and Path(path).stat().st_size):
        # Ray aborts the process on an unreadable or empty RAY_AUTH_TOKEN_PATH: say it in one line instead.
        raise SubmitError(f"RAY_AUTH_TOKEN_PATH={path}: no token in that file")
    from ray._raylet import AuthenticationTokenLoader

    loader = AuthenticationTokenLoader.instance()
    loader.reset_cache()  # the environment may have changed since the last call
    try:
        return dict(loader.get_token_for_http_header(ignore_auth_mode=True))
    finally:
        loader.reset_cache()  # a Ray this process starts later must load its own token, not this cluster's


def connect(address: str | None):
    """A ``JobSubmissionClient`` for ``address`` (``http://HOST:8265``; None: ``RAY_API_SERVER_ADDRESS`` or
    ``RAY_ADDRESS``) that sends the token."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address, headers=auth_headers())
    except AuthenticationError as exc:
        raise SubmitError(
            f"the cluster at {address} refused us ({str(exc).splitlines()[0]}); put its token in ~/.ray/auth_token, "
            "or set RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN"
        ) from None
    except ConnectionError as exc:
        raise SubmitError(f"no Ray job API at {address}: {exc}") from None


def prepare(stage_args: list[str], working_dir: str = ".", runtime_env_file: str | None = None,
            env: dict[str, str] | None = None) -> dict:
    """The checked ``submit_job`` arguments (entrypoint, runtime_env, metadata) of a stage; nothing is sent yet."""
    entrypoint = stage_entrypoint(stage_args, working_dir)
    runtime_env = build_runtime_env(working_dir, runtime_env_file, env)
    metadata = {"uer_ray_stage": shlex.split(entrypoint)[2]}
    check_no_secrets(runtime_env, metadata, entrypoint)
    return {"entrypoint": entrypoint, "runtime_env": runtime_env, "metadata": metadata}


def submit(client, stage_args: list[str], working_dir: str = ".", runtime_env_file: str | None = None,
           env: dict[str, str] | None = None, submission_id: str | None = None) -> str:
    """Submit ``python launch.py <stage_args>``; returns the submission id."""
    job = prepare(stage_args, working_dir, runtime_env_file, env)
    return client.submit_job(**job, submission_id=submission_id)


def wait(client, job_id: str, timeout_s: float | None = None, poll_s: float = 1.0):
    """Poll until the job is SUCCEEDED, FAILED or STOPPED; returns that status (TimeoutError past ``timeout_s``)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while not (status := client.get_job_status(job_id)).is_terminal():
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {status} after {timeout_s:.0f}s")
        time.sleep(poll_s)
    return status


def follow(client, job_id: str, out: TextIO = sys.stdout):
    """Stream the job's logs to ``out`` until it ends; returns its final status."""

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()

    try:
        asyncio.run(tail())
    except RuntimeError as exc:  # the log stream broke off (e.g. the head restarted): fall back to polling
        print(f"[submit] log stream ended early ({exc}); waiting for the job to end", file=sys.stderr)
    return wait(client, job_id)


def exit_code(status) -> int:
    return 0 if str(status) == "SUCCEEDED" else 1


def describe(client, job_id: str) -> str:
    info = client.get_job_info(job_id)
    return f"{job_id}: {info.status}" + (f" ({info.message})" if info.message else "")


def list_jobs(client, out: TextIO = sys.stdout) -> None:
    for job in sorted(client.list_jobs(), key=lambda j: j.start_time or 0):
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime((job.start_time or 0) / 1000))
        out.write(f"{job.submission_id or job.job_id}\t{job.status}\t{started}\t{job.entrypoint}\n")

"""Starting or joining Ray, and the environment every Ray process of a job shares."""
from __future__ import annotations

import contextlib
import os
import socket

# Ray Train V2's controller polls workers at this interval and every ray.train.report waits for a poll:
# the 2 s default costs 2 s a report. Users may still override it in their environment.
# Train's print patch sends a worker's print to its logger and, once W&B has wrapped stdout, to stdout as well: every
# line twice. Unpatched, print goes to stdout once, which Ray forwards to the driver.
DEFAULT_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25", "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
               "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
FORWARDED_ENV = ("WANDB_MODE", "WANDB_DIR", "WANDB_SILENT", "PYTHONPATH")
# Credentials travel to the processes of a job inside their task arguments (Ray's object store), never in a
# runtime_env, whose variables the dashboard and the job's metadata show to anyone who can open them.
SECRET_ENV = ("WANDB_API_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
              "AWS_DEFAULT_REGION", "AWS_REGION", "GOOGLE_APPLICATION_CREDENTIALS")


def secrets_from_env() -> dict[str, str]:
    return {key: os.environ[key] for key in SECRET_ENV if os.environ.get(key)}


def apply_secrets(secrets: dict[str, str]) -> None:
    """In a worker: the driver's credentials, for storage and W&B (the node's own environment may lack them)."""
    for key, value in secrets.items():
        os.environ.setdefault(key, value)


def job_env() -> dict[str, str]:
    env = {key: os.environ.get(key, value) for key, value in DEFAULT_ENV.items()}
    env.update({key: os.environ[key] for key in FORWARDED_ENV if key in os.environ})
    return env


def init_ray(run_cfg, num_cpus: int | None = None, dashboard: bool = True, resources: dict | None = None) -> None:
    """Join ``run.ray_address`` (or a cluster that ``ray job submit`` started us in), else start Ray in-process.

    ``dashboard=False`` suits commands that only run Ray Data (preprocess, vocabularies, embeddings): a local Ray
    without the dashboard starts faster and holds ~0.3 GB less. ``resources``: custom resources of a local Ray (e.g.
    ``{"tune_driver": 1000}`` for Tune trial actors that hold no CPU); a joined cluster must declare them itself."""
    global _local_ray
    import ray

    if ray.is_initialized():
        return
    env = job_env()
    os.environ.update(env)  # the driver's own Train controller reads it too
    from ray.data import DataContext

    # Ray Data read the variable when first imported, maybe before this; the driver's context travels to every
    # Ray Data actor (e.g. Train's dataset split coordinator), whose bars would flood the log.
    DataContext.get_current().enable_progress_bars = env["RAY_DATA_DISABLE_PROGRESS_BARS"] != "1"
    address = run_cfg.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=True)
    else:
        # A local Ray's workers inherit this process's environment (set above), so no runtime_env is needed: with
        # one, Ray could not reuse its pre-started workers and every actor would start about twice as slowly.
        # The dashboard serves the State API that Ray Train's placement-group cleaner polls; without it, it spams.
        with _pinned_address():
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=dashboard, resources=resources)
        _local_ray = True


@contextlib.contextmanager
def _pinned_address():
    """Start the local GCS on a port chosen here and put its address in RAY_ADDRESS for the Ray processes it spawns.
    Ray Train's placement-group cleaner (which frees a stopped run's CPUs, e.g. a trial stopped by Tune) finds the
    cluster through the State API: without the variable it fails on a machine where other Ray instances run. The
    driver's own environment is restored (a later ``init_ray`` must not try to join this instance)."""
    from ray._private.services import get_node_ip_address

    with socket.socket() as probe:
        probe.bind(("", 0))
        port = probe.getsockname()[1]
    pinned = {"RAY_GCS_SERVER_PORT": str(port), "RAY_ADDRESS": f"{get_node_ip_address()}:{port}"}
    saved = {key: os.environ.get(key) for key in pinned}
    os.environ.update(pinned)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_local_ray = False  # whether init_ray started the Ray instance this process is connected to


def started_here() -> bool:
    """Whether this process started the (local, fixed-size) Ray it is connected to."""
    return _local_ray


def stop_local_ray() -> None:
    """Shut down a Ray that init_ray started here, now rather than from Ray's exit hook, which first sleeps 0.5 s for
    worker logs still on their way (every stage has reported its results by the time a command returns)."""
    global _local_ray
    import ray

    if _local_ray and ray.is_initialized():
        ray.shutdown()
    _local_ray = False

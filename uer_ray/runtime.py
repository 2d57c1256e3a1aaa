"""Starting or joining Ray, and the environment every Ray process of a job shares."""
from __future__ import annotations

import os

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


def init_ray(run_cfg, num_cpus: int | None = None, dashboard: bool = True) -> None:
    """Join ``run.ray_address`` (or a cluster that ``ray job submit`` started us in), else start Ray in-process.

    ``dashboard=False`` suits commands that only run Ray Data (preprocess, vocabularies, embeddings): a local Ray
    without the dashboard starts faster and holds ~0.3 GB less."""
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
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=dashboard)
        _local_ray = True


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

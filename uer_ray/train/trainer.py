"""Building and running the ``TorchTrainer`` shared by pre-training and fine-tuning."""
from __future__ import annotations

import threading

import ray.train
from ray.train.torch import TorchConfig, TorchTrainer

from uer_ray.train.loop import train_loop_per_worker


def fit(
    job, stage_cls, name: str, datasets: dict, keep: int, progress=print, max_failures: int = 1, stage_args: dict | None = None
) -> ray.train.Result:
    """Run ``stage_cls`` on ``job.run.num_workers`` workers. Re-running with the same run name resumes from the
    latest checkpoint (Ray Train restores ``<storage>/<run>/ray/<name>``)."""
    run = job.run
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"job": job.model_dump_json(), "stage": stage_cls, "stage_args": stage_args or {}},
        torch_config=TorchConfig(backend="nccl" if run.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=run.num_workers,
            use_gpu=run.use_gpu,
            resources_per_worker={"CPU": run.cpus_per_worker, **({"GPU": 1} if run.use_gpu else {})},
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=str(job.run_dir / "ray"),
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=keep),
        ),
        datasets=datasets,
    )
    progress(f"{name}: {run.num_workers} worker(s) x {run.cpus_per_worker} CPU{' + 1 GPU' if run.use_gpu else ''}")
    return _fit_interruptibly(trainer)


def _fit_interruptibly(trainer: TorchTrainer) -> ray.train.Result:
    """Run ``fit`` off the main thread so Ctrl-C reaches us as KeyboardInterrupt (Ray's own handler would exit the
    process with status 1 and no word on resuming). The run's registered checkpoints stay for the resume."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="uer-ray-fit", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(timeout=0.5)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]

"""Running a stage on Ray Train: the ``TorchTrainer`` shared by pre-training and fine-tuning, with what must be
settled on the driver before any worker starts (resources, a resume that cannot be exact, a finished run) and the
failure handling (lost workers are replaced and resume from the latest checkpoint; a user's error is not retried)."""
from __future__ import annotations

import threading

import ray
import ray.train
from ray.train import UserCallback
from ray.train.torch import TorchConfig, TorchTrainer

from uer_ray import storage
from uer_ray.errors import RunFinished, UserError
from uer_ray.train.checkpoint import TRAIN_STATE_JSON
from uer_ray.train.checkpointer import TrainerState, check_resume, layout
from uer_ray.train.loop import train_loop_per_worker
from uer_ray.train.stage import RESULT

SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train's record of a run's registered checkpoints


class StopOnUserError(UserCallback):
    """Runs in Ray Train's controller: a worker's ``UserError`` (a bad config, data file or checkpoint) would fail
    the same way on every retry, so the run stops at once with that error instead of retrying."""

    def after_exception(self, run_context, worker_exceptions):
        for error in worker_exceptions.values():
            if isinstance(error, UserError):
                raise type(error)(str(error))


def ray_run_location(job, name: str) -> str:
    return storage.join(job.run_dir, "ray", name)


def latest_trainer_state(job, name: str) -> TrainerState | None:
    """The trainer state of the run's latest registered checkpoint, read on the driver (None: nothing to resume)."""
    run = ray_run_location(job, name)
    snapshot = storage.join(run, SNAPSHOT)
    if not storage.exists(snapshot):
        return None
    latest = storage.read_json(snapshot).get("latest_checkpoint_result") or {}
    directory = latest.get("checkpoint_dir_name")
    if not directory or not storage.exists(storage.join(run, directory, TRAIN_STATE_JSON)):
        return None
    return TrainerState(**storage.read_json(storage.join(run, directory, TRAIN_STATE_JSON)))


def preflight(job, stage_cls, name: str, stage_args: dict, fresh: bool) -> None:
    """Refuse what cannot run before a worker starts: a layout the cluster cannot place, a finished run, a resume that
    would not continue the run exactly. ``fresh`` forgets the run's checkpoints and results first."""
    plan = stage_cls.plan_of(job, **stage_args)
    output_dir = stage_cls.output_of(job, **stage_args)
    if fresh:
        storage.delete(ray_run_location(job, name))
        storage.delete(storage.join(output_dir, RESULT))
    result = storage.join(output_dir, RESULT)
    if storage.exists(result):
        done = storage.read_json(result)
        if done.get("step", 0) >= plan.total_steps or done.get("early_stopped"):
            raise RunFinished(
                f"{stage_cls.job_type} of run '{job.run.name}' already finished at step {done.get('step')} "
                f"(results in {output_dir}); pass --fresh to train it again, or choose another run.name"
            )
        storage.delete(result)  # more steps asked for: the run goes on from its last checkpoint
    saved = latest_trainer_state(job, name)
    if saved is not None:
        check_resume(saved, layout(stage_cls.hparams_of(job), job.run.num_workers, plan.total_steps,
                                   plan.data_fingerprint), stage_cls.hparams_of(job))
    check_resources(job.run)


def check_resources(run) -> None:
    """A local Ray cannot grow: workers that do not fit would wait forever."""
    from uer_ray.runtime import started_here

    if not started_here():
        return  # a cluster may autoscale to fit
    total = ray.cluster_resources()
    need_cpu = run.num_workers * run.cpus_per_worker
    if need_cpu > total.get("CPU", 0) + 1e-9:
        raise UserError(
            f"run.num_workers x run.cpus_per_worker = {run.num_workers} x {run.cpus_per_worker} = {need_cpu:g} CPUs, "
            f"but this machine's Ray has {total.get('CPU', 0):g}: lower one of them"
        )
    if run.use_gpu and run.num_workers > total.get("GPU", 0):
        raise UserError(f"run.num_workers = {run.num_workers} GPU workers, but this machine's Ray has "
                        f"{total.get('GPU', 0):g} GPUs: lower run.num_workers or set run.use_gpu=false")


def fit(job, stage_cls, name: str, stage_args: dict | None = None, keep: int = 2, callbacks=(), fresh: bool = False,
        progress=print) -> ray.train.Result:
    """Run ``stage_cls`` on ``job.run.num_workers`` workers. Re-running with the same run name resumes from the latest
    checkpoint (Ray Train restores ``<storage>/<run>/ray/<name>``)."""
    from uer_ray.runtime import secrets_from_env

    stage_args = stage_args or {}
    preflight(job, stage_cls, name, stage_args, fresh)
    run = job.run
    filesystem, root = storage.filesystem_and_root(storage.join(job.run_dir, "ray"))
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"job": job.model_dump_json(), "stage": stage_cls, "stage_args": stage_args,
                           "secrets": secrets_from_env()},
        torch_config=TorchConfig(backend="nccl" if run.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=run.num_workers,
            use_gpu=run.use_gpu,
            resources_per_worker={"CPU": run.cpus_per_worker, **({"GPU": 1} if run.use_gpu else {})},
            placement_strategy=run.placement_strategy,
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=root,
            storage_filesystem=filesystem,
            failure_config=ray.train.FailureConfig(max_failures=run.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=keep),
            callbacks=[StopOnUserError(), *callbacks],
            # Train's own INFO lines (each report, each checkpoint) would drown the progress lines.
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        ),
    )
    progress(f"{name}: {run.num_workers} worker(s) x {run.cpus_per_worker} CPU{' + 1 GPU' if run.use_gpu else ''}, "
             f"up to {run.max_failures} restart(s) from the latest checkpoint")
    return _fit_interruptibly(trainer)


def _fit_interruptibly(trainer: TorchTrainer) -> ray.train.Result:
    """Run ``fit`` off the main thread so Ctrl-C reaches us as KeyboardInterrupt (Ray's own handler would exit the
    process with status 1 and no word on resuming). A user's error comes back as itself (one line), not wrapped."""
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
    error = outcome.get("error")
    if error is not None:
        cause = getattr(error, "controller_failure", None)
        if isinstance(cause, UserError):
            raise cause from None
        raise error
    return outcome["result"]

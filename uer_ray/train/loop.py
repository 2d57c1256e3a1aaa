"""The one training loop for pre-training and fine-tuning, a plain loop (torchtitan's habit) over small parts:
data position (``data_position.py``), precision and accumulation (``precision.py``), schedule (``optim.py``),
checkpoints (``checkpointer.py``), metrics (``metrics.py``); a ``Stage`` says what is optimised.

Every rank takes the same steps and reports at the same steps (``ray.train.report`` is a barrier). Checkpoints are
made every ``checkpoint_every`` steps and at the end whatever ``report_every`` is; rank 0 logs to W&B and prints the
progress line.
"""
from __future__ import annotations

import logging

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from uer_ray import storage

from uer_ray.train.checkpoint import unwrap
from uer_ray.train.checkpointer import (
    TrainerState, check_resume, layout, restore_checkpoint, seed_everything, write_checkpoint,
)
from uer_ray.train.data_position import Prefetcher, rank_batches
from uer_ray.train.metrics import Meter
from uer_ray.train.optim import Schedule, make_optimizer
from uer_ray.train.precision import Precision
from uer_ray.train.stage import RESULT, Stage


def train_loop_per_worker(loop_config: dict) -> None:
    from uer_ray.config import job_on_worker
    from uer_ray.runtime import apply_secrets

    apply_secrets(loop_config.get("secrets", {}))
    # Ray Train logs every report at INFO through a logger named by its file (outside "ray.train", so past
    # RunConfig's LoggingConfig): the progress line says what they say.
    from ray.train.v2._internal.execution import context as train_context

    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
    job = job_on_worker(loop_config["job"])
    context = ray.train.get_context()
    stage = loop_config["stage"](job, context.get_world_rank(), context.get_world_size(), **loop_config["stage_args"])
    Trainer(stage, ray.train.torch.get_device()).run()


class Trainer:
    def __init__(self, stage: Stage, device: torch.device):
        self.stage, self.device, self.hp, self.plan = stage, device, stage.hparams, stage.plan
        self.rank, self.world = stage.rank, stage.world_size
        seed_everything(self.hp.seed + self.rank)
        model = stage.build_model()
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            stage.initialise(model)
        self.model = ray.train.torch.prepare_model(model)
        if self.hp.compile:
            self.model = torch.compile(self.model)
        self.optimizer = make_optimizer(self.model, self.hp, device)
        self.precision = Precision(self.hp.precision, device, self.hp.grad_accum_steps, self.hp.grad_clip)
        self.schedule = Schedule(self.hp, self.plan.total_steps)
        self.state = self._restore(checkpoint)
        self.meter = Meter(device, self.world, self.state.step, *stage.flops(self.device))
        self.tracker = self._tracker() if self.rank == 0 else None
        self.stopped = False

    def _restore(self, checkpoint) -> TrainerState:
        now = layout(self.hp, self.world, self.plan.total_steps, self.plan.data_fingerprint)
        if checkpoint is None:
            return TrainerState(layout=now)
        with checkpoint.as_directory() as directory:
            state = restore_checkpoint(directory, self.rank, unwrap(self.model), self.optimizer, self.precision)
        check_resume(state, now, self.hp)
        state.layout = now
        if self.rank == 0:
            print(f"[{self.stage.job_type}] resumed at step {state.step} (epoch {state.epoch}, batch {state.batch})",
                  flush=True)
        return state

    def _tracker(self):
        from uer_ray.tracking import Tracker, wandb_location

        job = self.stage.job
        # Named after the stage's output (pretrain, further-pretrain, finetune): one group, one run each.
        return Tracker(job.tracking, job.run.name, self.stage.job_type, job.model_dump(mode="json"),
                       wandb_location(job.tracking, job.run_dir), run_id=self.state.run_id,
                       name=storage.name(self.stage.output_dir))

    # the loop --------------------------------------------------------------------------------------------------------
    def run(self) -> None:
        stage = self.stage
        batches = Prefetcher(
            rank_batches(stage.train_source(), self.hp.seed, self.rank, self.world, self.hp.batch_size,
                         stage.job.train.shuffle_window, self.state.position, self.hp.group_by_length),
            depth=stage.job.train.prefetch,
            transform=lambda item: (item[1], self._pinned(stage.collate(item[2], item[0]))),
        )
        if self.rank == 0:
            print(f"[{stage.job_type}] global batch {self.hp.batch_size} x {self.world} worker(s) x "
                  f"{self.hp.grad_accum_steps} accumulation = {self.hp.batch_size * self.world * self.hp.grad_accum_steps}"
                  f", {self.plan.total_steps} steps, precision {self.hp.precision}", flush=True)
        try:
            self.model.train()
            while self.state.step < self.plan.total_steps and not self.stopped:
                self._optimizer_step(batches)
                self._after_step()
        finally:
            batches.close()
        self._finish()

    def _pinned(self, batch: dict) -> dict:
        """Page-locked host memory lets the copy to the GPU run asynchronously (``non_blocking``)."""
        return {k: v.pin_memory() for k, v in batch.items()} if self.device.type == "cuda" else batch

    def _optimizer_step(self, batches: Prefetcher) -> None:
        """One optimizer step over ``grad_accum_steps`` micro-batches. Nothing here waits for the device: statistics
        stay tensors until the report, tokens are counted on the host copy of the batch."""
        self.schedule.apply(self.optimizer, self.state.step)
        for micro in range(self.hp.grad_accum_steps):
            following, batch = next(batches)
            self.meter.count(self.stage.tokens(batch), len(batch["src"]))
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            with self.precision.autocast():
                loss, stats = self.stage.step(self.model, batch)
            self.precision.backward(self.model, loss, last_micro_batch=micro == self.hp.grad_accum_steps - 1)
            self.meter.add(stats)
            self.state.advance(following)
        self.meter.add({"_grad_norm": self.precision.step(self.model, self.optimizer), "_steps": 1})
        self.state.step += 1

    def _after_step(self) -> None:
        step, plan = self.state.step, self.plan
        report = step % plan.report_every == 0 or step >= plan.total_steps
        metrics = {"step": step}
        if report:
            metrics.update(self._window_metrics())
            metrics.update(self._evaluate())  # may stop the run early
            if self.tracker:
                self.tracker.log(metrics, step=step)
                print(self.meter.progress_line(self.stage.job_type, step, plan.total_steps, metrics), flush=True)
        checkpoint = step % plan.checkpoint_every == 0 or step >= plan.total_steps or self.stopped
        if report or checkpoint:
            self._report(metrics, checkpoint)
            self.meter.start_window()  # throughput counts training time only

    def _window_metrics(self) -> dict:
        sums, speed = self.meter.reduce()
        self.state.tokens += int(speed.pop("_tokens"))
        self.state.samples += int(speed.pop("_samples"))
        self.state.seconds += speed.pop("_seconds")
        return {"epoch": self.state.epoch, **self.stage.summarise(sums), "lr": self.schedule.lr(self.state.step - 1),
                **speed, "tokens": self.state.tokens, "samples": self.state.samples}

    def _evaluate(self) -> dict:
        self.model.eval()
        with torch.no_grad():
            metrics = self.stage.evaluate(unwrap(self.model), self.state.step)
        self.model.train()
        if "dev_metric" in metrics:
            best = self.state.best_metric
            if best is None or metrics["dev_metric"] > best:
                self.state.best_metric, self.state.stale_evaluations = metrics["dev_metric"], 0
                self.stage.keep_best(unwrap(self.model), metrics, self.state.step)
            else:
                self.state.stale_evaluations += 1
            patience = getattr(self.hp, "early_stopping", None)
            if patience and self.state.stale_evaluations >= patience:
                self.stopped = True
                metrics["early_stopped"] = 1
            metrics["best_dev_metric"] = self.state.best_metric
        return metrics

    def _report(self, metrics: dict, checkpoint: bool) -> None:
        if not checkpoint:
            ray.train.report(metrics)
            return
        with storage.staging_dir("uer-ckpt-") as directory:
            write_checkpoint(directory, self.rank, self.model, self.optimizer, self.precision, self.state,
                             self.stage.checkpoint_config(), self.stage.vocab())
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(directory)))

    def _finish(self) -> None:
        model = unwrap(self.model)
        model.eval()
        with torch.no_grad():
            final = self.stage.finish(model)
        nodes = _gather(ray.get_runtime_context().get_node_id())
        if self.rank == 0:
            result = {"step": self.state.step, "tokens": self.state.tokens, "samples": self.state.samples,
                      "train_seconds": round(self.state.seconds, 1),
                      "best_dev_metric": self.state.best_metric, "early_stopped": self.stopped, **final,
                      "worker_nodes": nodes}
            storage.write_json(storage.join(self.stage.output_dir, RESULT), result)
        if self.tracker:
            if final:
                self.tracker.summary(final)
                print(f"[{self.stage.job_type}] final " + " ".join(f"{k}={v:.4g}" for k, v in final.items()), flush=True)
            self.tracker.finish()


def _gather(value) -> list:
    """``value`` of every rank, in rank order."""
    if not dist.is_initialized():
        return [value]
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values

"""The one ``train_loop_per_worker`` for pre-training and fine-tuning: a plain loop (torchtitan's habit), parameterised
by a ``Stage`` that says what is optimised, from which batches, and how it is evaluated.

Every rank makes the same number of steps and reports at the same steps (``ray.train.report`` is a barrier); rank 0
writes checkpoints and logs to W&B.
"""
from __future__ import annotations

import math
import tempfile
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from pathlib import Path
from typing import Iterator

import ray.train
import ray.train.torch
import torch
from torch import nn

from uer_ray.train.checkpoint import load_train_state, load_weights, save_checkpoint, unwrap


class Stage(ABC):
    """What a run optimises. Subclasses: pre-training (``train/pretrain.py``), fine-tuning (``finetune/``)."""

    job_type: str

    def __init__(self, job, rank: int, world_size: int):
        self.job, self.rank, self.world_size = job, rank, world_size

    # optimisation settings -------------------------------------------------------------------------------------
    @property
    @abstractmethod
    def hparams(self):
        """An object with lr, weight_decay, warmup, grad_clip, seed."""

    @property
    @abstractmethod
    def total_steps(self) -> int: ...

    @property
    @abstractmethod
    def report_every(self) -> int: ...

    # model and data ----------------------------------------------------------------------------------------------
    @abstractmethod
    def build_model(self) -> nn.Module: ...

    def initialise(self, model: nn.Module) -> None:
        """Warm start when there is no checkpoint to resume from (e.g. load pre-trained weights)."""

    @abstractmethod
    def batches(self, epoch: int, skip: int) -> Iterator[dict[str, torch.Tensor]]:
        """This rank's training batches for ``epoch``, after skipping ``skip`` already-trained ones."""

    @abstractmethod
    def step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss to minimise and additive statistics (sums) for the report."""

    @abstractmethod
    def summarise(self, sums: dict[str, float]) -> dict[str, float]:
        """Statistics summed over a report window -> metrics (means, accuracies)."""

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Metrics on held-out data at each report (all ranks call it)."""
        return {}

    def should_checkpoint(self, step: int, metrics: dict[str, float], final: bool) -> bool:
        """Without a dev metric (which keeps the best model), when to checkpoint."""
        return final

    def checkpoint_config(self) -> dict:
        return {}

    def finish(self, model: nn.Module) -> dict[str, float]:
        """Final metrics once training ends, given the best model (e.g. its test accuracy)."""
        return {}

    def vocab(self):
        return None


def linear_schedule(warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def make_optimizer(model: nn.Module, hp) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        # Biases and norm gains are not decayed (BERT's recipe).
        (no_decay if param.ndim < 2 else decay).append(param)
    groups = [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=hp.lr)


def all_reduce_sums(sums: dict[str, float], device) -> dict[str, float]:
    if not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1:
        return dict(sums)
    keys = sorted(sums)
    values = torch.tensor([float(sums[k]) for k in keys], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(values)
    return dict(zip(keys, values.tolist()))


def train_loop_per_worker(loop_config: dict) -> None:
    from uer_ray.config import JobConfig
    from uer_ray.tracking import Tracker

    job = JobConfig.model_validate_json(loop_config["job"])
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    stage: Stage = loop_config["stage"](job, rank, world_size, **loop_config.get("stage_args", {}))
    hp = stage.hparams
    torch.manual_seed(hp.seed + rank)
    device = ray.train.torch.get_device()

    model = stage.build_model()
    optimizer = make_optimizer(model, hp)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, linear_schedule(int(hp.warmup * stage.total_steps), stage.total_steps)
    )
    position = {"step": 0, "epoch": 0, "batch_in_epoch": 0}
    best: dict = {"metric": None, "state": None}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            load_weights(directory, model)
            state = load_train_state(directory)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        position = state["position"]
        best["metric"] = state.get("best_metric")
        best["state"] = _cpu_copy(model)
    else:
        stage.initialise(model)
    model = ray.train.torch.prepare_model(model)

    tracker = None
    if rank == 0:
        tracker = Tracker(job.tracking, job.run.name, stage.job_type, job.model_dump(mode="json"), job.run_dir / "wandb")
        if checkpoint:
            print(f"[{stage.job_type}] resumed at step {position['step']} (epoch {position['epoch']})", flush=True)

    def report(metrics: dict, keep: bool) -> None:
        if keep and "dev_metric" in metrics:
            best["metric"] = metrics["dev_metric"]
            best["state"] = _cpu_copy(unwrap(model))
        if tracker:
            tracker.log(metrics, step=position["step"])
            print(f"[{stage.job_type}] " + " ".join(f"{k}={_fmt(v)}" for k, v in metrics.items()), flush=True)
        if keep and rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                train_state = {
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "position": position,
                    "best_metric": best["metric"],
                }
                save_checkpoint(Path(tmp) / "ckpt", model, stage.checkpoint_config(), stage.vocab(), train_state)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(Path(tmp) / "ckpt"))
        else:
            ray.train.report(metrics)

    sums: dict[str, float] = defaultdict(float)
    window_start, window_tokens = time.time(), 0
    model.train()
    while position["step"] < stage.total_steps:
        epoch_steps = 0
        for batch in stage.batches(position["epoch"], position["batch_in_epoch"]):
            epoch_steps += 1
            batch = {k: v.to(device) for k, v in batch.items()}
            loss, stats = stage.step(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), hp.grad_clip)
            optimizer.step()
            scheduler.step()
            position["step"] += 1
            position["batch_in_epoch"] += 1
            for key, value in stats.items():
                sums[key] += value
            window_tokens += int((batch["src"] > 0).sum())
            done = position["step"] >= stage.total_steps
            if position["step"] % stage.report_every == 0 or done:
                elapsed = time.time() - window_start
                metrics = {
                    "step": position["step"],
                    "epoch": position["epoch"],
                    **stage.summarise(sums),
                    "lr": scheduler.get_last_lr()[0],
                    "tokens_per_s": window_tokens * world_size / max(elapsed, 1e-9),
                }
                model.eval()
                metrics.update(stage.evaluate(model))
                model.train()
                if "dev_metric" in metrics:  # keep the best model on held-out data
                    keep = best["metric"] is None or metrics["dev_metric"] > best["metric"]
                else:
                    keep = stage.should_checkpoint(position["step"], metrics, done)
                report(metrics, keep)
                sums.clear()
                window_start, window_tokens = time.time(), 0
            if done:
                break
        else:
            if epoch_steps == 0 and position["batch_in_epoch"] == 0:
                raise RuntimeError(
                    f"rank {rank} got no training batch in epoch {position['epoch']}: the dataset has fewer rows "
                    f"than workers x batch_size ({world_size} x {stage.hparams.batch_size})"
                )
            position["epoch"] += 1
            position["batch_in_epoch"] = 0
            continue
        break

    if best["state"] is not None:
        unwrap(model).load_state_dict(best["state"])
    model.eval()
    final = stage.finish(unwrap(model))
    if final:
        if tracker:
            tracker.summary(final)
            print(f"[{stage.job_type}] final " + " ".join(f"{k}={_fmt(v)}" for k, v in final.items()), flush=True)
        report({"step": position["step"], **final}, keep=True)
    if tracker:
        tracker.finish()


def _cpu_copy(model: nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) and not math.isnan(value) else str(value)

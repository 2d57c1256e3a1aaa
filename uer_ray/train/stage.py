"""What a run optimises: the loop (``train/loop.py``) is one for every stage and asks a ``Stage`` for the model, the
data, the loss, the evaluation and what a checkpoint records. Subclasses: pre-training (``train/pretrain.py``) and
fine-tuning (``finetune/finetune.py``).

A stage's ``plan`` (steps, data fingerprint) is computed the same way on the driver, before any worker starts (to
refuse a resume that cannot be exact), and on every worker.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import pyarrow as pa
import torch
from torch import nn

from uer_ray.train.data_position import DataPosition, ParquetSource

RESULT = "result.json"  # written by rank 0 when a stage finishes: final metrics, steps, tokens, worker nodes


@dataclass(frozen=True)
class Plan:
    total_steps: int  # optimizer steps
    report_every: int
    checkpoint_every: int
    data_fingerprint: str  # what the training rows are: a resume must read the same


class Stage(ABC):
    """``hparams_of``, ``plan_of`` and ``output_of`` are class methods: the driver asks them before any worker exists.
    ``stage_args`` are what the driver passes on to every worker (e.g. the run's name inside the job)."""

    job_type: str

    def __init__(self, job, rank: int, world_size: int, **stage_args):
        self.job, self.rank, self.world_size = job, rank, world_size
        self.hparams = self.hparams_of(job)
        self.plan = self.plan_of(job, **stage_args)
        self.output_dir = self.output_of(job, **stage_args)

    @classmethod
    @abstractmethod
    def hparams_of(cls, job):
        """The stage's ``OptimConfig`` (lr, schedule, batch size, precision, ...)."""

    @classmethod
    @abstractmethod
    def plan_of(cls, job, **stage_args) -> Plan: ...

    @classmethod
    @abstractmethod
    def output_of(cls, job, **stage_args) -> str:
        """Where the stage's results live in storage (``result.json``, exported models)."""

    # model ---------------------------------------------------------------------------------------------------------
    @abstractmethod
    def build_model(self) -> nn.Module: ...

    def initialise(self, model: nn.Module) -> None:
        """Warm start when there is no checkpoint to resume from (e.g. load pre-trained weights)."""

    def checkpoint_config(self) -> dict:
        return {}

    def vocab(self):
        return None

    # data and step -------------------------------------------------------------------------------------------------
    @abstractmethod
    def train_source(self) -> ParquetSource: ...

    @abstractmethod
    def collate(self, table: pa.Table, position: DataPosition) -> dict[str, torch.Tensor]:
        """A batch table -> tensors; randomness (e.g. dynamic masks) seeded by the position, so resumes repeat it."""

    @abstractmethod
    def step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss to minimise and additive statistics (sums) for the report."""

    def tokens(self, batch: dict[str, torch.Tensor]) -> int:
        """Non-padding tokens of a batch."""
        return int((batch["src"] != self.vocab().pad_id).sum())

    def flops(self, device: torch.device) -> tuple[float | None, float | None]:
        """(training FLOPs per token, the device's peak FLOP/s) for MFU; unknown by default."""
        return None, None

    @abstractmethod
    def summarise(self, sums: dict[str, float]) -> dict[str, float]:
        """Statistics summed over a report window and over ranks -> metrics (means, accuracies)."""

    # evaluation ----------------------------------------------------------------------------------------------------
    def evaluate(self, model: nn.Module, step: int) -> dict[str, float]:
        """Metrics on held-out data at a report (every rank calls it); ``dev_metric`` picks the best model."""
        return {}

    def keep_best(self, model: nn.Module, metrics: dict[str, float], step: int) -> None:
        """Called on every rank when ``dev_metric`` improved (e.g. rank 0 publishes the model)."""

    def finish(self, model: nn.Module) -> dict[str, float]:
        """Final metrics once training ends (e.g. test scores of the best model)."""
        return {}

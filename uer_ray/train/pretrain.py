"""Pre-train stage: Parquet instances -> Ray Train ``TorchTrainer`` -> checkpoints (safetensors) and W&B metrics."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import ray
import ray.train

from uer_ray.data.collate import collate_instances
from uer_ray.data.preprocess import read_manifest
from uer_ray.models.model import build_model
from uer_ray.tokenizers import Vocab
from uer_ray.train.checkpoint import VOCAB, load_weights
from uer_ray.train.loop import Stage, train_loop_per_worker
from uer_ray.train.trainer import fit


class PretrainStage(Stage):
    job_type = "pretrain"

    def __init__(self, job, rank, world_size):
        super().__init__(job, rank, world_size)
        self._vocab = Vocab.load(job.dataset_dir / VOCAB)
        self.data_options = read_manifest(job.dataset_dir)["processor"]  # e.g. the masking options
        self.shard = ray.train.get_dataset_shard("train")

    @property
    def hparams(self):
        return self.job.train

    @property
    def total_steps(self) -> int:
        return self.job.train.total_steps

    @property
    def report_every(self) -> int:
        return self.job.train.report_every

    def build_model(self):
        return build_model(self.job.model, self._vocab)

    def initialise(self, model) -> None:
        if self.job.train.init_from:  # further pre-training: heads absent from the source start fresh
            missing = load_weights(self.job.train.init_from, model, strict=False)
            if self.rank == 0:
                print(f"[pretrain] warm start from {self.job.train.init_from}; fresh: {missing or 'nothing'}")

    def batches(self, epoch, skip):
        for index, table in enumerate(
            self.shard.iter_batches(batch_size=self.job.train.batch_size, batch_format="pyarrow", drop_last=True)
        ):
            if index >= skip:
                # Seeded by (seed, rank, epoch, batch): dynamic masks differ every epoch and survive a resume.
                rng = np.random.default_rng([self.job.train.seed, self.rank, epoch, index])
                yield collate_instances(table, self.job.model.targets, self._vocab, rng, self.data_options)

    def step(self, model, batch):
        out = model(batch)
        stats = {"batches": 1.0, "loss": float(out["loss"].detach())}
        for name in self.job.model.targets:
            stats[f"{name}_loss"] = float(out[f"{name}_loss"])
            stats[f"{name}_correct"] = float(out[f"{name}_correct"])
            stats[f"{name}_count"] = float(out[f"{name}_count"])
        return out["loss"], stats

    def summarise(self, sums):
        batches = max(sums.get("batches", 0.0), 1.0)
        metrics = {"loss": sums.get("loss", 0.0) / batches}
        for name in self.job.model.targets:
            metrics[f"{name}_loss"] = sums.get(f"{name}_loss", 0.0) / batches
            metrics[f"{name}_acc"] = sums.get(f"{name}_correct", 0.0) / max(sums.get(f"{name}_count", 0.0), 1.0)
        return metrics

    def should_checkpoint(self, step, metrics, final):
        return final or step % self.job.train.checkpoint_every == 0

    def checkpoint_config(self):
        return {"model": self.job.model.model_dump(mode="json", exclude={"uer_config"}), "tokenizer": self.job.tokenizer.model_dump(mode="json")}

    def vocab(self):
        return self._vocab


def check_dataset(job) -> dict:
    """The dataset must feed every target and match the tokenizer; fills model.vocab_size from the manifest."""
    manifest = read_manifest(job.dataset_dir)
    unfed = [t for t in job.model.targets if t not in manifest["targets_fed"]]
    if unfed:
        raise ValueError(
            f"dataset {job.dataset_dir} was built by processor '{manifest['processor']['name']}', which cannot feed "
            f"target(s) {', '.join(unfed)}"
        )
    if manifest["seq_length"] > job.model.max_seq_length:
        raise ValueError(f"dataset seq_length {manifest['seq_length']} > model.max_seq_length {job.model.max_seq_length}")
    if job.model.vocab_size not in (None, manifest["vocab_size"]):
        raise ValueError(f"model.vocab_size {job.model.vocab_size} != the dataset's vocabulary ({manifest['vocab_size']})")
    if manifest["instances"] == 0:
        raise ValueError(f"dataset {job.dataset_dir} holds no instances; see its manifest's repair counts")
    job.model.vocab_size = manifest["vocab_size"]
    return manifest


def pretrain(job, name: str = "pretrain", progress=print) -> ray.train.Result:
    """``name`` is the Ray Train run inside the job's run directory: re-running it resumes."""
    check_dataset(job)
    dataset = ray.data.read_parquet(str(job.dataset_dir), file_extensions=["parquet"])
    return fit(job, PretrainStage, name, {"train": dataset}, keep=job.train.keep_checkpoints, progress=progress)


def latest_checkpoint(result: ray.train.Result) -> Path:
    if result.checkpoint is None:
        raise RuntimeError("the run produced no checkpoint")
    return Path(result.checkpoint.path)

"""Pre-train stage: Parquet instances in storage -> Ray Train ``TorchTrainer`` -> checkpoints (safetensors), W&B
metrics, and the final model published at ``<storage>/<run>/<name>/final``."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import ray.train
import torch

from uer_ray import storage
from uer_ray.data.collate import collate_instances
from uer_ray.data.preprocess import read_manifest
from uer_ray.errors import UserError
from uer_ray.models.model import build_model
from uer_ray.tokenizers import Vocab
from uer_ray.train.checkpoint import VOCAB, check_encoder_fits, load_matching, save_checkpoint
from uer_ray.train.data_position import ParquetSource, batches_per_epoch
from uer_ray.train.stage import Plan, Stage
from uer_ray.train.trainer import fit

FINAL = "final"


def data_fingerprint(manifest: dict) -> str:
    keys = ("shards", "instances", "seed", "processor", "corpus_bytes", "tokenizer")
    return hashlib.sha256(json.dumps({k: manifest.get(k) for k in keys}, sort_keys=True).encode()).hexdigest()[:16]


class PretrainStage(Stage):
    job_type = "pretrain"

    def __init__(self, job, rank, world_size, name: str = "pretrain"):
        super().__init__(job, rank, world_size, name=name)
        self.manifest = read_manifest(job.dataset_dir)
        self._vocab = Vocab.load(storage.local_path(storage.join(job.dataset_dir, VOCAB)))
        self.probe = None
        if job.train.probe is not None:
            from uer_ray.finetune.probe import Probe

            self.probe = Probe(job, self._vocab, rank)

    @classmethod
    def hparams_of(cls, job):
        return job.train

    @classmethod
    def plan_of(cls, job, name: str = "pretrain") -> Plan:
        train = job.train
        return Plan(train.total_steps, train.report_every, train.checkpoint_every,
                    data_fingerprint(read_manifest(job.dataset_dir)))

    @classmethod
    def output_of(cls, job, name: str = "pretrain") -> str:
        return storage.join(job.run_dir, name)

    def build_model(self):
        return build_model(self.job.model, self._vocab)

    def initialise(self, model) -> None:
        if self.job.train.init_from:  # further pre-training: heads absent or of another shape start fresh
            fresh, reshaped = load_matching(self.job.train.init_from, model)
            if self.rank == 0:
                other = f" ({', '.join(reshaped)}: another shape in the checkpoint)" if reshaped else ""
                print(f"[pretrain] warm start from {self.job.train.init_from}; fresh: {', '.join(fresh) or 'nothing'}"
                      f"{other}", flush=True)

    def train_source(self) -> ParquetSource:
        return ParquetSource([storage.join(self.job.dataset_dir, shard) for shard in self.manifest["shards"]])

    def collate(self, table, position):
        # Seeded by (seed, rank, epoch, batch): dynamic masks differ every epoch and repeat exactly on resume.
        rng = np.random.default_rng([self.job.train.seed, self.rank, position.epoch, position.batch])
        return collate_instances(table, self.job.model.targets, self._vocab, rng, self.manifest["processor"])

    def step(self, model, batch):
        out = model(batch)
        stats = {"batches": 1.0, "loss": out["loss"].detach()}  # tensors: summed on the device until the report
        for name in self.job.model.targets:
            for part in ("loss", "correct", "count"):
                stats[f"{name}_{part}"] = out[f"{name}_{part}"]
        return out["loss"], stats

    def summarise(self, sums):
        batches = max(sums.get("batches", 0.0), 1.0)
        metrics = {"loss": sums.get("loss", 0.0) / batches}
        for name in self.job.model.targets:
            metrics[f"{name}_loss"] = sums.get(f"{name}_loss", 0.0) / batches
            metrics[f"{name}_acc"] = sums.get(f"{name}_correct", 0.0) / max(sums.get(f"{name}_count", 0.0), 1.0)
        return metrics

    def evaluate(self, model, step):
        if self.probe is None or step % self.job.train.probe.every:
            return {}
        return self.probe.run(model)

    def flops(self, device):
        from uer_ray.train.flops import flops_per_token, peak_flops

        peak = peak_flops(device, self.hparams.precision)
        try:
            return flops_per_token(self.job.model, self.manifest["seq_length"]), peak
        except ValueError:  # a part whose FLOPs are not counted (RNN/CNN encoders): no MFU
            return None, peak

    def finish(self, model):
        if self.rank == 0:
            with storage.staging_dir() as directory:
                save_checkpoint(directory, model, self.checkpoint_config(), self._vocab)
                storage.publish_dir(directory, storage.join(self.output_dir, FINAL))
        return {}

    def checkpoint_config(self):
        return {"model": self.job.model.model_dump(mode="json", exclude={"uer_config"}),
                "tokenizer": self.job.tokenizer.model_dump(mode="json") if self.job.tokenizer else None}

    def vocab(self):
        return self._vocab


def check_inputs(job) -> dict:
    """The dataset must feed every target and match the model, and a warm start's checkpoint must hold the model's
    encoder; fills model.vocab_size from the manifest."""
    manifest = read_manifest(job.dataset_dir)
    unfed = [t for t in job.model.targets if t not in manifest["targets_fed"]]
    if unfed:
        raise UserError(
            f"dataset {job.dataset_dir} was built by processor '{manifest['processor']['name']}', which cannot feed "
            f"target(s) {', '.join(unfed)}"
        )
    if manifest["seq_length"] > job.model.max_seq_length:
        raise UserError(f"dataset seq_length {manifest['seq_length']} > model.max_seq_length {job.model.max_seq_length}")
    if job.model.vocab_size not in (None, manifest["vocab_size"]):
        raise UserError(f"model.vocab_size {job.model.vocab_size} != the dataset's vocabulary ({manifest['vocab_size']})")
    if manifest["instances"] == 0:
        raise UserError(f"dataset {job.dataset_dir} holds no instances; see its manifest's repair counts")
    if batches_per_epoch(manifest["instances"], job.run.num_workers, job.train.batch_size) == 0:
        raise UserError(
            f"dataset {job.dataset_dir} holds {manifest['instances']} instances: fewer than run.num_workers x "
            f"train.batch_size ({job.run.num_workers} x {job.train.batch_size})"
        )
    job.model.vocab_size = manifest["vocab_size"]
    if job.train.init_from:
        check_warm_start(job, Vocab.load(storage.local_path(storage.join(job.dataset_dir, VOCAB))))
    return manifest


def check_warm_start(job, vocab: Vocab) -> None:
    """``train.init_from`` must hold the model's encoder and have read its tokens with the dataset's ids: the same
    vocabulary size with other tokens would pass every shape check and silently scramble the embedding."""
    source = storage.resolve_published(str(job.train.init_from))
    if storage.exists(storage.join(source, VOCAB)):
        theirs, ours = Vocab.load(storage.local_path(storage.join(source, VOCAB))).tokens, vocab.tokens
        if theirs != ours:
            first = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b), min(len(theirs), len(ours)))
            raise UserError(f"train.init_from: {job.train.init_from} was trained on another vocabulary than the "
                            f"dataset {job.dataset_dir} (its {len(theirs):,} tokens and the dataset's {len(ours):,} "
                            f"first differ at id {first}): build the dataset with the checkpoint's tokenizer")
    with torch.device("meta"):  # shapes only: nothing allocated
        model = build_model(job.model, vocab)
    check_encoder_fits(job.train.init_from, model, "train.init_from")


def pretrain(job, name: str = "pretrain", callbacks=(), fresh: bool = False, progress=print) -> ray.train.Result:
    """``name`` is the Ray Train run inside the job's run directory: re-running it resumes."""
    from uer_ray.finetune.probe import prepare_probes

    check_inputs(job)
    prepare_probes(job, progress)
    return fit(job, PretrainStage, name, {"name": name}, keep=job.train.keep_checkpoints, callbacks=callbacks,
               fresh=fresh, progress=progress)


def final_model(job, name: str = "pretrain") -> str:
    """The published final model of a finished pre-training run."""
    return storage.join(PretrainStage.output_of(job, name), FINAL)

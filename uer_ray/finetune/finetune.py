"""Fine-tune stage: a task head on a pre-trained (or fresh) encoder, trained on Ray Train; the dev metric each epoch
picks the best model, published atomically at ``<finetune_dir>/best``; the best model is tested at the end.

On the driver, before any worker starts (``prepare``): the checkpoint's model and tokenizer are adopted (options the
user set that contradict it are refused, naming the key), every split is read and tokenized (bad rows reported), and
the data is written to the run's storage for the workers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from uer_ray import storage
from uer_ray.errors import UserError
from uer_ray.finetune.data import features_location, read_split, read_written, write_split
from uer_ray.finetune.tasks.base import Task, TaskData
from uer_ray.registry import TASKS
from uer_ray.tokenizers import build_tokenizer
from uer_ray.train.checkpoint import (
    check_encoder_fits, checkpoint_tokenizer, load_config, load_matching, load_weights, save_checkpoint,
)
from uer_ray.train.data_position import ParquetSource, batches_per_epoch, eval_range
from uer_ray.train.stage import RESULT, Plan, Stage
from uer_ray.train.trainer import fit

BEST = "best"


@dataclass
class Prepared:
    task: Task
    data: dict[str, TaskData]


# ---------------------------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------------------------
def adopt_pretrained(job) -> None:
    """Fine-tuning a checkpoint: its model and tokenizer configs replace the job's; model options the user set to
    other values than the checkpoint's are refused, except dropout rates (regularization, not weights: fine-tuning
    sets its own, as Hugging Face's ``hidden_dropout_prob`` does)."""
    from uer_ray.config import ModelConfig, deep_merge

    saved = load_config(job.finetune.pretrained)
    contradictions = _contradictions(job.model, saved["model"], "model")
    if contradictions:
        raise UserError(f"{contradictions[0]} (the pre-trained checkpoint {job.finetune.pretrained} fixes the model; "
                        f"leave the option out or change finetune.pretrained)")
    tokenizer = checkpoint_tokenizer(job.finetune.pretrained)
    if tokenizer is None:
        raise UserError(f"{job.finetune.pretrained}: the checkpoint records no tokenizer")
    if job.tokenizer is not None and job.tokenizer.name != tokenizer["name"]:
        raise UserError(f"tokenizer.name: {job.tokenizer.name!r} contradicts the checkpoint's {tokenizer['name']!r}")
    job.tokenizer = tokenizer
    model = deep_merge({**saved["model"], "uer_config": None}, _dropouts_set(job.model))
    job.model = ModelConfig.model_validate(model)


FINETUNE_OWN = {"targets", "uer_config", "vocab_size", "dropout"}  # model keys a checkpoint does not fix


def _contradictions(model, saved: dict, prefix: str) -> list[str]:
    """``key: value contradicts the checkpoint's value`` for every option the user set explicitly."""
    found = []
    for key in sorted(model.model_fields_set - FINETUNE_OWN):
        value, theirs = getattr(model, key), saved.get(key)
        if hasattr(value, "model_fields_set") and isinstance(theirs, dict):
            found += _contradictions(value, theirs, f"{prefix}.{key}")
            continue
        mine = value.model_dump(mode="json") if hasattr(value, "model_dump") else value
        if mine != theirs:
            found.append(f"{prefix}.{key}: {mine!r} contradicts the checkpoint's {theirs!r}")
    return found


def _dropouts_set(model) -> dict:
    """The dropout rates the user set explicitly (``model.embedding.dropout``, ``model.encoder.dropout``), nested
    like the model config."""
    found = {}
    for key in model.model_fields_set:
        value = getattr(model, key)
        if key == "dropout":
            found[key] = value
        elif hasattr(value, "model_fields_set") and (nested := _dropouts_set(value)):
            found[key] = nested
    return found


def prepare(job, progress=print) -> Prepared:
    """Adopt the checkpoint, build the task, read and check every split; nothing runs on Ray yet."""
    if not job.finetune.train_path:
        raise UserError("invalid config: finetune.train_path: required")
    if job.finetune.pretrained:
        adopt_pretrained(job)
    if job.tokenizer is None:
        raise UserError("invalid config: tokenizer: required to fine-tune from scratch (e.g. {name: bert, vocab_path: vocab.txt})")
    tokenizer = build_tokenizer(job.tokenizer)
    if job.model.vocab_size is None:
        job.model.vocab_size = tokenizer.vocab_size
    task = TASKS.get(job.finetune.task.name)(job.finetune.task, tokenizer, job.finetune.seq_length)
    data = {"train": read_split(task, job.finetune.train_path, job.finetune.max_bad_fraction, progress)}
    task.fit_labels(data["train"])
    if job.finetune.dev_path:
        data["dev"] = read_split(task, job.finetune.dev_path, job.finetune.max_bad_fraction, progress)
    if job.finetune.test_path:
        data["test"] = read_split(task, job.finetune.test_path, job.finetune.max_bad_fraction, progress, labelled=None)
    if job.finetune.pretrained:
        with torch.device("meta"):  # shapes only: nothing allocated
            model = task.build_model(job.model)
        check_encoder_fits(job.finetune.pretrained, model, "finetune.pretrained")
    return Prepared(task, data)


def stage_inputs(job, prepared: Prepared) -> dict:
    """Write the splits (and, for remote storage, the inputs only the driver can read) to the run's storage."""
    data_dir = storage.join(job.finetune_dir, "data")
    fingerprints = {split: write_split(data, storage.join(data_dir, split)) for split, data in prepared.data.items()}
    if storage.is_uri(job.run.storage_path):
        _upload_local_inputs(job, storage.join(job.finetune_dir, "inputs"))
    return {"train_rows": prepared.data["train"].features.num_rows, "data_fingerprint": fingerprints["train"],
            "splits": sorted(prepared.data)}


def _upload_local_inputs(job, inputs: str) -> None:
    """Workers on other nodes cannot read the driver's disk: local vocabularies and checkpoints go to storage."""
    tokenizer = job.tokenizer.model_dump(mode="json")
    for key in ("vocab_path", "spm_model_path"):
        if tokenizer.get(key) and not storage.is_uri(tokenizer[key]):
            target = storage.join(inputs, storage.name(tokenizer[key]))
            storage.write_bytes(target, storage.read_bytes(tokenizer[key]))
            setattr(job.tokenizer, key, target)
    if job.finetune.pretrained and not storage.is_uri(job.finetune.pretrained):
        target = storage.join(inputs, "pretrained")
        storage.copy_dir(storage.resolve_published(job.finetune.pretrained), target)
        job.finetune.pretrained = target


def finetune(job, prepared: Prepared | None = None, fresh: bool = False, progress=print) -> dict:
    """Fine-tune, keep the best dev model in ``<finetune_dir>/best``, test it; returns the final metrics."""
    prepared = prepared or prepare(job, progress)
    stage_args = stage_inputs(job, prepared)
    fit(job, FinetuneStage, "finetune", stage_args, keep=1, fresh=fresh, progress=progress)
    result = storage.read_json(storage.join(job.finetune_dir, RESULT))
    best = storage.join(job.finetune_dir, BEST)
    tested = ", ".join(f"{k}={v:.4f}" for k, v in result.items() if k.startswith("test_") and isinstance(v, float))
    progress(f"finetune: best model -> {best}" + (f"; {tested}" if tested else ""))
    return {**result, "best_dir": best}


# ---------------------------------------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------------------------------------
class FinetuneStage(Stage):
    job_type = "finetune"

    def __init__(self, job, rank, world_size, **stage_args):
        super().__init__(job, rank, world_size, **stage_args)
        self.tokenizer = build_tokenizer(job.tokenizer)
        self.task = TASKS.get(job.finetune.task.name)(job.finetune.task, self.tokenizer, job.finetune.seq_length)
        self.data_dir = storage.join(job.finetune_dir, "data")
        self.splits = stage_args["splits"]

    @classmethod
    def hparams_of(cls, job):
        return job.finetune

    @classmethod
    def plan_of(cls, job, train_rows: int, data_fingerprint: str, splits=()) -> Plan:
        hp = job.finetune
        per_epoch = batches_per_epoch(train_rows, job.run.num_workers, hp.batch_size) // hp.grad_accum_steps
        if per_epoch == 0:
            raise UserError(f"finetune.train_path has {train_rows} rows: fewer than run.num_workers x batch_size x "
                            f"grad_accum_steps ({job.run.num_workers} x {hp.batch_size} x {hp.grad_accum_steps})")
        return Plan(hp.epochs * per_epoch, per_epoch, per_epoch, data_fingerprint)

    @classmethod
    def output_of(cls, job, **stage_args) -> str:
        return job.finetune_dir

    def build_model(self):
        return self.task.build_model(self.job.model, self.tokenizer.vocab)

    def initialise(self, model) -> None:
        if self.job.finetune.pretrained:
            fresh, reshaped = load_matching(self.job.finetune.pretrained, model)
            if self.rank == 0:
                new = ", ".join(fresh) or "none (a fine-tuned model's head for the same labels is kept)"
                other = f" ({', '.join(reshaped)}: another shape in the checkpoint)" if reshaped else ""
                print(f"[finetune] encoder from {self.job.finetune.pretrained}; new: {new}{other}", flush=True)

    def train_source(self):
        return ParquetSource([features_location(storage.join(self.data_dir, "train"))])

    def collate(self, table, position):
        return self.task.collate(table)

    def step(self, model, batch):
        return self.task.loss(model, batch)

    def summarise(self, sums):
        return self.task.summarise(sums, "train_")

    def evaluate(self, model, step):
        if "dev" not in self.splits:
            return {}
        metrics = self._score(model, "dev")
        return {**{f"dev_{k}": v for k, v in metrics.items()}, "dev_metric": metrics[self.task.metric]}

    def keep_best(self, model, metrics, step):
        if self.rank == 0:
            with storage.staging_dir() as directory:
                save_checkpoint(directory, model, self.checkpoint_config(), self.tokenizer.vocab)
                storage.publish_dir(directory, storage.join(self.output_dir, BEST))

    def finish(self, model):
        best = storage.join(self.output_dir, BEST)
        if "dev" in self.splits and storage.exists(storage.resolve_published(best)):
            load_weights(best, model)
        elif self.rank == 0:  # no dev set: the last model is the one kept
            self.keep_best(model, {}, 0)
        if "test" not in self.splits:
            return {}
        return {f"test_{k}": v for k, v in self._score(model, "test", write_predictions=True).items()}

    def _score(self, model, split: str, write_predictions: bool = False) -> dict[str, float]:
        """Every row of the split scored exactly once across the ranks, then the task's metric on all of them."""
        location = storage.join(self.data_dir, split)
        source = ParquetSource([features_location(location)])
        start, stop = eval_range(source.rows, self.rank, self.world_size)
        outputs = self._predict(model, source.read_rows(start, stop))
        outputs = concat_outputs(_gather(outputs))
        data = read_written(location)
        if write_predictions and self.rank == 0:
            with storage.staging_dir() as directory:
                path = directory / f"{split}_predictions{self.task.prediction_suffix}"
                self.task.write_predictions(outputs, data, path)
                storage.write_bytes(storage.join(self.output_dir, path.name), path.read_bytes())
        return self.task.score(outputs, data) if data.labelled else {}

    def _predict(self, model, table) -> list[dict[str, np.ndarray]]:
        device = next(model.parameters()).device
        size = prediction_batch_size(self.hparams)
        outputs = []
        for begin in range(0, table.num_rows, size):
            batch = {k: v.to(device) for k, v in self.task.collate(table.slice(begin, size)).items()}
            outputs.append(self.task.predict(model, batch))
        return outputs

    def checkpoint_config(self):
        return {"model": self.job.model.model_dump(mode="json", exclude={"uer_config"}),
                "tokenizer": self.job.tokenizer.model_dump(mode="json"),
                "finetune": self.job.finetune.model_dump(mode="json")}

    def vocab(self):
        return self.tokenizer.vocab


def prediction_batch_size(hparams) -> int:
    """Rows per forward pass when predicting (dev, test and `infer`): twice the training batch, as no gradients are
    kept. Evaluation and `infer` batch alike: a batch is padded to its longest row and another padded shape rounds
    the floats differently, so only alike batches give one worker's test predictions and `infer`'s to the last digit."""
    return hparams.batch_size * 2


def _gather(outputs: list) -> list:
    """Every rank's list of output batches, concatenated in rank order."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return outputs
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, outputs)
    return [batch for rank_outputs in everyone for batch in rank_outputs]


def concat_outputs(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Batches of row-aligned outputs -> one array per key; per-token outputs of different widths are right-padded
    (with -1 for integers, -inf for floats) to the widest."""
    if not batches:
        return {}
    out = {}
    for key in batches[0]:
        arrays = [b[key] for b in batches]
        if arrays[0].ndim > 1:
            width = max(a.shape[1] for a in arrays)
            fill = -1 if np.issubdtype(arrays[0].dtype, np.integer) else -np.inf
            arrays = [np.pad(a, [(0, 0), (0, width - a.shape[1])] + [(0, 0)] * (a.ndim - 2), constant_values=fill)
                      for a in arrays]
        out[key] = np.concatenate(arrays)
    return out


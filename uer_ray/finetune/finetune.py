"""Fine-tune stage (a task head on a pre-trained encoder, dev metric per epoch, best model kept, test at the end) and
batch inference with Ray Data."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import ray
import ray.train

from uer_ray.data.collate import column_array
from uer_ray.registry import TASKS
from uer_ray.tokenizers import build_tokenizer
from uer_ray.train.checkpoint import VOCAB, load_config, load_weights, unwrap
from uer_ray.train.loop import Stage, all_reduce_sums
from uer_ray.train.trainer import fit


def task_batch(table) -> dict:
    import torch

    batch = {"src": column_array(table, "src", 0), "seg": column_array(table, "seg", 0)}
    if "label" in table.column_names:
        batch["label"] = column_array(table, "label", 0)
    return {k: torch.from_numpy(v) for k, v in batch.items()}


class FinetuneStage(Stage):
    job_type = "finetune"

    def __init__(self, job, rank, world_size, train_rows: int):
        super().__init__(job, rank, world_size)
        self.tokenizer = build_tokenizer(job.tokenizer)
        self.task = TASKS.get(job.finetune.task.name)(job.finetune.task, self.tokenizer, job.finetune.seq_length)
        self.steps_per_epoch = max(1, (train_rows // world_size) // job.finetune.batch_size)

    @property
    def hparams(self):
        return self.job.finetune

    @property
    def total_steps(self) -> int:
        return self.job.finetune.epochs * self.steps_per_epoch

    @property
    def report_every(self) -> int:
        return self.steps_per_epoch

    def build_model(self):
        return self.task.build_model(self.job.model)

    def initialise(self, model) -> None:
        if self.job.finetune.pretrained:
            missing = load_weights(self.job.finetune.pretrained, model, strict=False)
            if self.rank == 0:
                print(f"[finetune] encoder from {self.job.finetune.pretrained}; new: {', '.join(missing)}", flush=True)

    def _iterate(self, split: str, drop_last: bool):
        shard = ray.train.get_dataset_shard(split)
        for table in shard.iter_batches(batch_size=self.job.finetune.batch_size, batch_format="pyarrow", drop_last=drop_last):
            yield task_batch(table)

    def batches(self, epoch, skip):
        for index, batch in enumerate(self._iterate("train", drop_last=True)):
            if index >= skip:
                yield batch

    def step(self, model, batch):
        return self.task.loss(model, batch)

    def summarise(self, sums):
        return self.task.summarise(sums, "train_")

    def _score(self, model, split: str) -> dict[str, float]:
        import torch

        sums = {"loss": 0.0, "correct": 0.0, "count": 0.0}
        with torch.no_grad():
            for batch in self._iterate(split, drop_last=False):
                _, stats = self.task.loss(unwrap(model), batch)
                for key in sums:
                    sums[key] += stats[key]
        return self.task.summarise(all_reduce_sums(sums, "cpu"), f"{split}_")

    def evaluate(self, model):
        if not self.job.finetune.dev_path:
            return {}
        metrics = self._score(model, "dev")
        return {**metrics, "dev_metric": metrics[f"dev_{self.task.metric}"]}

    def finish(self, model):
        return self._score(model, "test") if self.job.finetune.test_path else {}

    def checkpoint_config(self):
        return {
            "model": self.job.model.model_dump(mode="json", exclude={"uer_config"}),
            "tokenizer": self.job.tokenizer.model_dump(mode="json"),
            "finetune": self.job.finetune.model_dump(mode="json"),
        }

    def vocab(self):
        return self.tokenizer.vocab


def checkpoint_tokenizer(checkpoint_dir: Path, saved: dict) -> dict:
    """The tokenizer config saved with a checkpoint, reading the vocabulary copy inside the checkpoint."""
    tokenizer = dict(saved["tokenizer"])
    if "vocab_path" in tokenizer and (Path(checkpoint_dir) / VOCAB).is_file():
        tokenizer["vocab_path"] = str(Path(checkpoint_dir) / VOCAB)
    return tokenizer


def adopt_pretrained(job) -> None:
    """Fine-tuning a checkpoint: its model and tokenizer configs replace the job's (the vocab must match)."""
    from uer_ray.config import ModelConfig

    saved = load_config(job.finetune.pretrained)
    job.tokenizer = checkpoint_tokenizer(job.finetune.pretrained, saved)
    job.model = ModelConfig.model_validate({**saved["model"], "uer_config": None})


def prepare(job):
    """Validate the data files and build the task; returns (task, {split: table})."""
    if not job.finetune.train_path:
        raise ValueError("finetune.train_path is required")
    if job.finetune.pretrained:
        adopt_pretrained(job)
    tokenizer = build_tokenizer(job.tokenizer)
    if job.model.vocab_size is None:
        job.model.vocab_size = tokenizer.vocab_size
    task_cfg = job.finetune.task
    task = TASKS.get(task_cfg.name)(task_cfg, tokenizer, job.finetune.seq_length)
    tables = {"train": task.read(job.finetune.train_path)}
    if task_cfg.labels_num is None:
        task_cfg.labels_num = task.infer_labels(tables["train"])
    for split in ("dev", "test"):
        path = getattr(job.finetune, f"{split}_path")
        if path:
            tables[split] = task.read(path)  # labels checked against labels_num, now known
    return task, tables


def finetune(job, prepared: tuple | None = None, progress=print) -> dict:
    """Fine-tune, keep the best dev checkpoint in ``<finetune_dir>/best``, return the final metrics.
    ``prepared``: what ``prepare(job)`` returned, when the caller already read the data."""
    _, tables = prepared or prepare(job)
    datasets = {split: ray.data.from_arrow(table) for split, table in tables.items()}
    result = fit(
        job, FinetuneStage, "finetune", datasets, keep=1, progress=progress,
        stage_args={"train_rows": tables["train"].num_rows},
    )
    best_dir = job.finetune_dir / "best"
    if best_dir.exists():
        shutil.rmtree(best_dir)
    shutil.copytree(result.checkpoint.path, best_dir)
    metrics = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}
    (job.finetune_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    progress(f"finetune: best model -> {best_dir}; " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith("test_")))
    return {**metrics, "best_dir": str(best_dir)}


def load_finetuned(checkpoint_dir: Path):
    """(task, model in eval mode) from a fine-tuned checkpoint."""
    from uer_ray.config import build_config

    saved = load_config(checkpoint_dir)
    if "finetune" not in saved:
        raise ValueError(f"{checkpoint_dir} is a pre-training checkpoint; a fine-tuned one is needed")
    job = build_config({
        "tokenizer": checkpoint_tokenizer(checkpoint_dir, saved),
        "model": {**saved["model"], "uer_config": None},
        "finetune": {"task": saved["finetune"]["task"], "seq_length": saved["finetune"]["seq_length"]},
    })
    task = TASKS.get(job.finetune.task.name)(job.finetune.task, build_tokenizer(job.tokenizer), job.finetune.seq_length)
    model = task.build_model(job.model)
    load_weights(checkpoint_dir, model)
    return task, model.eval()


class Predictor:
    """Ray Data actor: loads a fine-tuned checkpoint once, predicts batches."""

    def __init__(self, checkpoint_dir: str):
        self.task, self.model = load_finetuned(Path(checkpoint_dir))

    def __call__(self, table):
        import pyarrow as pa
        import torch

        with torch.no_grad():
            labels, probs = self.task.predict(self.model, task_batch(table))
        return pa.table({"line": table.column("line"), "label": labels.astype(np.int32), "prob": probs.max(-1).astype(np.float32)})


def infer(job, checkpoint_dir: Path, input_path: Path, output_path: Path, progress=print) -> Path:
    """Predict a TSV (``text_a`` [+ ``text_b``]; a ``label`` column is ignored) -> ``label<TAB>prob`` per row."""
    import pyarrow as pa

    task, _ = load_finetuned(Path(checkpoint_dir))
    table = task.read(input_path, labelled=False)
    predictions = ray.data.from_arrow(table).map_batches(
        Predictor,
        fn_constructor_kwargs={"checkpoint_dir": str(checkpoint_dir)},
        batch_size=job.finetune.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=job.run.num_workers),
        num_cpus=job.run.cpus_per_worker,
    )
    result = pa.concat_tables(ray.get(predictions.to_arrow_refs())).sort_by("line")
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    with open(output_path, "w", encoding="utf-8") as f:
        f.write("label\tprob\n")
        for label, prob in zip(result.column("label").to_pylist(), result.column("prob").to_pylist()):
            f.write(f"{label}\t{prob:.4f}\n")
    progress(f"infer: {result.num_rows} predictions -> {output_path}")
    return output_path

"""Batch inference with a fine-tuned checkpoint (any task): the driver reads and tokenizes the input through the task,
a Ray Data actor pool predicts (each actor loads the model once, from storage), and the task writes the predictions
in UER-py's output format (TSV, or JSON for QA)."""
from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from uer_ray import storage
from uer_ray.errors import UserError
from uer_ray.finetune.data import read_split
from uer_ray.finetune.finetune import concat_outputs, prediction_batch_size
from uer_ray.registry import TASKS
from uer_ray.tokenizers import build_tokenizer
from uer_ray.train.checkpoint import checkpoint_tokenizer, load_config, load_weights


def load_finetuned(checkpoint: str):
    """(task, model in eval mode) from a fine-tuned checkpoint (a local path or a storage location)."""
    from uer_ray.config import build_config

    checkpoint = storage.resolve_published(str(checkpoint))
    saved = load_config(checkpoint)
    if "finetune" not in saved:
        raise UserError(f"{checkpoint} is a pre-training checkpoint; a fine-tuned one is needed")
    job = build_config({
        "tokenizer": checkpoint_tokenizer(checkpoint),
        "model": {**saved["model"], "uer_config": None},
        "finetune": {"task": saved["finetune"]["task"], "seq_length": saved["finetune"]["seq_length"]},
    })
    task = TASKS.get(job.finetune.task.name)(job.finetune.task, build_tokenizer(job.tokenizer), job.finetune.seq_length)
    model = task.build_model(job.model, task.tokenizer.vocab)
    load_weights(checkpoint, model)
    return task, model.eval()


class Predictor:
    """Ray Data actor: loads a fine-tuned checkpoint once, predicts batches of features."""

    def __init__(self, checkpoint: str, secrets: dict):
        from uer_ray.runtime import apply_secrets

        apply_secrets(secrets)
        self.task, self.model = load_finetuned(checkpoint)

    def __call__(self, table: pa.Table) -> dict[str, np.ndarray]:
        import torch

        with torch.no_grad():
            outputs = self.task.predict(self.model, self.task.collate(table))
        return {"feature_id": table.column("feature_id").to_numpy(), **outputs}


def infer(job, checkpoint: str, input_path: str, output_path: str, progress=print) -> str:
    """Predict ``input_path`` (a label column, if any, is ignored) -> ``output_path`` in the task's format."""
    import ray

    from uer_ray.runtime import secrets_from_env

    task, _ = load_finetuned(checkpoint)
    data = read_split(task, input_path, job.finetune.max_bad_fraction, progress, labelled=False)
    predictions = ray.data.from_arrow(data.features).map_batches(
        Predictor,
        fn_constructor_kwargs={"checkpoint": str(checkpoint), "secrets": secrets_from_env()},
        batch_size=prediction_batch_size(job.finetune),
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=job.run.num_workers),
        num_cpus=job.run.cpus_per_worker,
    )
    batches, done, started, shown = [], 0, time.time(), 0.0
    for batch in predictions.iter_batches(batch_size=None, batch_format="numpy"):
        batches.append(batch)
        done += len(batch["feature_id"])
        if time.time() - shown > 2:
            progress(f"infer: {done:,}/{data.features.num_rows:,} inputs, {done / (time.time() - started):,.0f}/s")
            shown = time.time()
    outputs = concat_outputs(batches)
    order = np.argsort(outputs.pop("feature_id"), kind="stable")
    outputs = {key: value[order] for key, value in outputs.items()}
    with storage.staging_dir() as directory:
        local = directory / f"predictions{task.prediction_suffix}"
        task.write_predictions(outputs, data, local)
        storage.write_bytes(storage.absolute(output_path), local.read_bytes())
    progress(f"infer: {data.features.num_rows:,} inputs -> {output_path}")
    return storage.absolute(output_path)

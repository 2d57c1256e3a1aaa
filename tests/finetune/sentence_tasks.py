"""What the classification and ranking tests share: a task and a tiny model from a job config, a plain torch
training loop and the predict-all-features pass the fine-tuning stage makes (no Ray: these are unit tests)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from uer_ray.config import build_config
from uer_ray.registry import TASKS
from uer_ray.tokenizers import build_tokenizer

TINY_MODEL = {
    "hidden_size": 32, "max_seq_length": 64, "embedding": {"dropout": 0.0},
    "encoder": {"name": "transformer", "layers_num": 1, "heads_num": 2, "feedforward_size": 64, "dropout": 0.0},
}


def make_task(data_dir: Path, task: dict, tokenizer_name: str = "char", seq_length: int = 32):
    """The task and the job config a user's spec would give (a tokenizer on the shared Chinese BERT vocab)."""
    vocab = data_dir / "models" / "google_zh_vocab.txt"
    job = build_config({
        "tokenizer": {"name": tokenizer_name, "vocab_path": str(vocab)},
        "model": TINY_MODEL,
        "finetune": {"task": task, "seq_length": seq_length},
    })
    tokenizer = build_tokenizer(job.tokenizer)
    job.model.vocab_size = tokenizer.vocab_size  # as the fine-tuning stage fills it in
    return TASKS.get(task["name"])(job.finetune.task, tokenizer, seq_length), job


def write_tsv(path: Path, header: list[str], rows: list[list]) -> Path:
    lines = ["\t".join(header)] + ["\t".join(str(field) for field in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_tsv_rows(path: Path, column: str) -> list[str]:
    """One column of a labelled TSV (the texts the tests build their own files from)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    index = lines[0].split("\t").index(column)
    return [line.split("\t")[index] for line in lines[1:]]


def batches(task, data, batch_size: int):
    for start in range(0, data.features.num_rows, batch_size):
        yield task.collate(data.features.slice(start, batch_size))


def train(task, model, data, steps: int, lr: float = 2e-3, batch_size: int = 16) -> None:
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    epoch = list(batches(task, data, batch_size))
    for step in range(steps):
        loss, _ = task.loss(model, epoch[step % len(epoch)])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def evaluate_loss(task, model, data) -> dict[str, float]:
    """The split's training metrics from the additive sums, as the stage all-reduces them."""
    model.eval()
    totals: dict[str, float] = {}
    with torch.no_grad():
        for batch in batches(task, data, 32):
            for key, value in task.loss(model, batch)[1].items():
                totals[key] = totals.get(key, 0.0) + value
    return task.summarise(totals, "dev_")


def predict_all(task, model, data) -> dict[str, np.ndarray]:
    """Every feature's outputs in feature_id order, concatenated per key (what ``score`` receives)."""
    model.eval()
    parts: dict[str, list[np.ndarray]] = {}
    with torch.no_grad():
        for batch in batches(task, data, 32):
            for key, value in task.predict(model, batch).items():
                parts.setdefault(key, []).append(value)
    return {key: np.concatenate(values) for key, values in parts.items()}


def fit(task, job, data, steps: int):
    """fit_labels, build the tiny model, train it; returns the model and the loss before and after."""
    task.fit_labels(data)
    torch.manual_seed(0)
    model = task.build_model(job.model)
    before = evaluate_loss(task, model, data)["dev_loss"]
    train(task, model, data, steps)
    return model, before, evaluate_loss(task, model, data)["dev_loss"]


def skipped(issues) -> str:
    """Every recorded skipped row (``file:line: reason``), one a line (the summary shows two per reason)."""
    return "\n".join(where for examples in issues.log.examples.values() for where in examples)

"""Helpers for the tagging / mrc / choice tests: a task from a real job config (BERT Chinese vocabulary), a tiny
1-layer transformer, a plain torch training loop and whole-split prediction (no Ray: the task contract alone)."""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from uer_ray.config import build_config
from uer_ray.registry import TASKS
from uer_ray.tokenizers import build_tokenizer

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "uer"
VOCAB = DATA / "models" / "google_zh_vocab.txt"


def make_task(task: dict, seq_length: int):
    """The task and its job config; the model is a 1-layer transformer, hidden 32."""
    job = build_config({
        "tokenizer": {"name": "bert", "vocab_path": str(VOCAB)},
        "model": {"hidden_size": 32, "max_seq_length": max(seq_length, 64),
                  "encoder": {"name": "transformer", "layers_num": 1, "heads_num": 2, "feedforward_size": 64}},
        "finetune": {"task": task, "seq_length": seq_length},
    })
    tokenizer = build_tokenizer(job.tokenizer)
    job.model.vocab_size = tokenizer.vocab_size
    return TASKS.get(task["name"])(job.finetune.task, tokenizer, seq_length), job


@contextlib.contextmanager
def one_thread():
    """A tiny model on one thread: on a busy machine, syncing two threads per op costs 20x the work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def eval_loss(task, model, features: pa.Table) -> float:
    model.eval()
    with torch.no_grad(), one_thread():
        loss, _ = task.loss(model, task.collate(features))
    return float(loss)


def train(task, model, features: pa.Table, steps: int, batch_size: int = 16, lr: float = 2e-3, seed: int = 0) -> None:
    """A plain loop: random batches of ``features``, AdamW."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    with one_thread():
        for _ in range(steps):
            rows = rng.choice(features.num_rows, min(batch_size, features.num_rows), replace=False)
            loss, sums = task.loss(model, task.collate(features.take(rows)))
            assert np.isfinite(float(loss.detach())) and sums["count"] > 0
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def predict_all(task, model, features: pa.Table, batch_size: int = 32) -> dict[str, np.ndarray]:
    """``predict`` over every feature in order, outputs concatenated (what the fine-tuning stage hands ``score``)."""
    model.eval()
    parts: dict[str, list] = {}
    with torch.no_grad(), one_thread():
        for offset in range(0, features.num_rows, batch_size):
            for key, value in task.predict(model, task.collate(features.slice(offset, batch_size))).items():
                parts.setdefault(key, []).append(value)
    return {key: np.concatenate(values) for key, values in parts.items()}

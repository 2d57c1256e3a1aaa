"""Downstream tasks: how a task reads its UER-format TSV, the head it puts on the encoder, its loss and metric.

UER-format TSV: a header row naming the columns (``label``, ``text_a``, optional ``text_b``), tab-separated.
Malformed rows are errors that name the file and line: silently dropping downstream data would skew the metric.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from uer_ray.config import ComponentConfig
from uer_ray.models.model import Backbone, init_weights
from uer_ray.registry import TASKS


class DataError(ValueError):
    """A downstream data file that cannot be used as it is; the message names the file and line."""


def read_tsv(path: Path, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> tuple[dict[str, list[str]], list[int]]:
    """Columns by name, and the 1-based line number of each row. Every row must have the header's column count."""
    path = Path(path)
    with open(path, encoding="utf-8", errors="strict", newline="") as f:
        try:
            lines = f.read().splitlines()
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    if not lines:
        raise DataError(f"{path}: empty file (expected a header row: {', '.join(required)})")
    header = lines[0].split("\t")
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(
            f"{path}:1: header {header} lacks column(s) {', '.join(missing)} (expected {', '.join(required + optional)})"
        )
    wanted = [c for c in required + optional if c in header]
    columns: dict[str, list[str]] = {c: [] for c in wanted}
    line_numbers = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise DataError(f"{path}:{number}: expected {len(header)} tab-separated columns ({', '.join(header)}), found {len(fields)}")
        for c in wanted:
            columns[c].append(fields[header.index(c)])
        line_numbers.append(number)
    return columns, line_numbers


class Task:
    """A task = how to read examples, the head over the encoder, the loss and the dev metric."""

    metric: str = "acc"

    def __init__(self, cfg, tokenizer, seq_length: int):
        self.cfg, self.tokenizer, self.seq_length = cfg, tokenizer, seq_length

    def read(self, path: Path, labelled: bool = True) -> pa.Table:
        raise NotImplementedError

    def build_model(self, model_cfg) -> nn.Module:
        raise NotImplementedError


class ClassifierModel(Backbone):
    """Encoder + pooling + two-layer head (UER-py's classifier)."""

    def __init__(self, model_cfg, labels_num: int, pooling: str, vocab=None):
        super().__init__(model_cfg, vocab)
        self.pooling = pooling
        self.output_layer_1 = nn.Linear(model_cfg.hidden_size, model_cfg.hidden_size)
        self.output_layer_2 = nn.Linear(model_cfg.hidden_size, labels_num)
        self.apply(init_weights)

    def forward(self, src: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        hidden = self.encode(src, seg)
        if self.pooling == "mean":
            keep = (seg > 0).unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * keep).sum(1) / keep.sum(1).clamp(min=1)
        else:
            pooled = hidden[:, 0]
        return self.output_layer_2(torch.tanh(self.output_layer_1(pooled)))


@TASKS.register("classification")
class Classification(Task):
    """Sentence or sentence-pair classification (``text_b`` present -> pair)."""

    class Config(ComponentConfig):
        labels_num: int | None = Field(None, ge=2)  # None: 1 + the largest label in the training file
        pooling: Literal["first", "mean"] = "first"

    def encode_pair(self, text_a: list[str], text_b: list[str] | None) -> tuple[list, list]:
        vocab = self.tokenizer.vocab
        ids_a = self.tokenizer.encode_batch(text_a)
        ids_b = self.tokenizer.encode_batch(text_b) if text_b is not None else [None] * len(ids_a)
        src, seg = [], []
        for a, b in zip(ids_a, ids_b):
            if b is None:
                tokens = [vocab.cls_id, *a[: self.seq_length - 2], vocab.sep_id]
                src.append(tokens)
                seg.append([1] * len(tokens))
            else:
                while len(a) + len(b) > self.seq_length - 3:  # trim the longer text (BERT's rule)
                    (a if len(a) > len(b) else b).pop()
                src.append([vocab.cls_id, *a, vocab.sep_id, *b, vocab.sep_id])
                seg.append([1] * (len(a) + 2) + [2] * (len(b) + 1))
        return src, seg

    def read(self, path: Path, labelled: bool = True) -> pa.Table:
        required = ("label", "text_a") if labelled else ("text_a",)
        columns, line_numbers = read_tsv(path, required, ("text_b",))
        src, seg = self.encode_pair(columns["text_a"], columns.get("text_b"))
        table = {"src": src, "seg": seg, "line": line_numbers}
        if labelled:
            labels = []
            for raw, number in zip(columns["label"], line_numbers):
                try:
                    labels.append(int(raw))
                except ValueError:
                    raise DataError(f"{path}:{number}: label {raw!r} is not an integer") from None
                if labels[-1] < 0 or (self.cfg.labels_num is not None and labels[-1] >= self.cfg.labels_num):
                    raise DataError(f"{path}:{number}: label {labels[-1]} is outside 0..{(self.cfg.labels_num or 1) - 1}")
            table["label"] = labels
        ids = pa.list_(pa.int32())
        return pa.table({k: pa.array(v, type=ids if k in ("src", "seg") else pa.int32()) for k, v in table.items()})

    def infer_labels(self, train: pa.Table) -> int:
        labels = np.asarray(train.column("label"))
        return self.cfg.labels_num or max(2, int(labels.max()) + 1)

    def build_model(self, model_cfg) -> nn.Module:
        return ClassifierModel(model_cfg, self.cfg.labels_num, self.cfg.pooling, self.tokenizer.vocab)

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(batch["src"], batch["seg"])
        loss = F.cross_entropy(logits, batch["label"])
        correct = (logits.argmax(-1) == batch["label"]).sum()
        return loss, {"loss": float(loss.detach()) * len(logits), "correct": float(correct), "count": float(len(logits))}

    def predict(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
        probs = torch.softmax(model(batch["src"], batch["seg"]), -1)
        return probs.argmax(-1).cpu().numpy(), probs.cpu().numpy()

    @staticmethod
    def summarise(sums: dict[str, float], prefix: str) -> dict[str, float]:
        count = max(sums.get("count", 0.0), 1.0)
        return {f"{prefix}loss": sums.get("loss", 0.0) / count, f"{prefix}acc": sums.get("correct", 0.0) / count}

"""Sentence and sentence-pair classification (UER-py's run_classifier): ``label text_a [text_b]``."""
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
from uer_ray.finetune.tasks.base import RowIssues, Task, TaskData, ids_array, read_tsv
from uer_ray.models.model import Backbone, init_weights
from uer_ray.registry import TASKS


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


def encode_pairs(tokenizer, seq_length: int, text_a: list[str], text_b: list[str] | None) -> tuple[list, list]:
    """``[CLS] a [SEP] (b [SEP])`` ids and segments (1 for a, 2 for b); the longer text is trimmed first (BERT)."""
    vocab = tokenizer.vocab
    ids_a = tokenizer.encode_batch(text_a)
    ids_b = tokenizer.encode_batch(text_b) if text_b is not None else [None] * len(ids_a)
    src, seg = [], []
    for a, b in zip(ids_a, ids_b):
        if b is None:
            tokens = [vocab.cls_id, *a[: seq_length - 2], vocab.sep_id]
            src.append(tokens)
            seg.append([1] * len(tokens))
        else:
            while len(a) + len(b) > seq_length - 3:
                (a if len(a) > len(b) else b).pop()
            src.append([vocab.cls_id, *a, vocab.sep_id, *b, vocab.sep_id])
            seg.append([1] * (len(a) + 2) + [2] * (len(b) + 1))
    return src, seg


@TASKS.register("classification")
class Classification(Task):
    """Sentence or sentence-pair classification (``text_b`` present -> pair)."""

    class Config(ComponentConfig):
        labels_num: int | None = Field(None, ge=2)  # None: 1 + the largest label in the training file
        pooling: Literal["first", "mean"] = "first"

    def read(self, path: Path, labelled: bool = True) -> TaskData:
        issues = RowIssues(path)
        required = ("label", "text_a") if labelled else ("text_a",)
        columns, lines = read_tsv(path, required, ("text_b",), issues)
        keep = list(range(len(lines)))
        labels = []
        if labelled:
            keep = []
            for i, raw in enumerate(columns["label"]):
                label = self._parse_label(raw, lines[i], issues)
                if label is not None:
                    keep.append(i)
                    labels.append(label)
        text_a = [columns["text_a"][i] for i in keep]
        text_b = [columns["text_b"][i] for i in keep] if "text_b" in columns else None
        src, seg = encode_pairs(self.tokenizer, self.seq_length, text_a, text_b)
        n = len(keep)
        features = {"feature_id": pa.array(np.arange(n)), "example_id": pa.array(np.arange(n)),
                    "src": ids_array(src), "seg": ids_array(seg)}
        examples = {"example_id": pa.array(np.arange(n)), "line": pa.array([lines[i] for i in keep], pa.int32())}
        if labelled:
            features["label"] = examples["label"] = pa.array(labels, pa.int32())
        return TaskData(pa.table(features), pa.table(examples), issues)

    def _parse_label(self, raw: str, line: int, issues: RowIssues) -> int | None:
        try:
            label = int(raw)
        except ValueError:
            issues.skip(line, "label_not_an_integer", f"label {raw!r} is not an integer")
            return None
        if label < 0 or (self.cfg.labels_num is not None and label >= self.cfg.labels_num):
            issues.skip(line, "label_out_of_range", f"label {label} is outside 0..{(self.cfg.labels_num or 1) - 1}")
            return None
        return label

    def fit_labels(self, train: TaskData) -> None:
        if self.cfg.labels_num is None:
            labels = train.features.column("label").to_numpy()
            self.cfg.labels_num = max(2, int(labels.max()) + 1)

    def build_model(self, model_cfg, vocab=None) -> nn.Module:
        return ClassifierModel(model_cfg, self.cfg.labels_num, self.cfg.pooling, vocab or self.tokenizer.vocab)

    def loss(self, model, batch):
        logits = model(batch["src"], batch["seg"])
        loss = F.cross_entropy(logits.float(), batch["label"])
        correct = (logits.argmax(-1) == batch["label"]).sum()
        return loss, {"loss": float(loss.detach()) * len(logits), "correct": float(correct), "count": float(len(logits))}

    def predict(self, model, batch):
        probs = torch.softmax(model(batch["src"], batch["seg"]).float(), -1)
        return {"pred": probs.argmax(-1).cpu().numpy(), "prob": probs.cpu().numpy()}

    def score(self, outputs, data):
        gold = data.features.column("label").to_numpy()
        return {"acc": float((outputs["pred"] == gold).mean()) if len(gold) else 0.0}

    def write_predictions(self, outputs, data, path: Path) -> None:
        """UER-py's run_classifier_infer format: ``label`` then ``prob`` (class probabilities, space-separated)."""
        with open(path, "w", encoding="utf-8") as f:
            f.write("label\tprob\n")
            for label, prob in zip(outputs["pred"].tolist(), outputs["prob"]):
                f.write(f"{label}\t{' '.join(f'{p:.4f}' for p in prob)}\n")

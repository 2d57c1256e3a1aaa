"""Sentence and sentence-pair tasks on one pooled vector (UER-py's run_classifier, run_classifier_multi_label,
run_regression): ``label text_a [text_b]``. One model (encoder + pooling + two-layer head) serves them all; each task
picks the head size, the label parsing, the loss, the metrics and the prediction file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from uer_ray.config import ComponentConfig
from uer_ray.finetune.tasks.base import RowIssues, Task, TaskData, ids_array, read_tsv
from uer_ray.models.model import Backbone, init_weights
from uer_ray.models.targets import Pooling, pool
from uer_ray.registry import TASKS


# metrics (plain numpy; tests cross-check them against scikit-learn and scipy) ---------------------------------------
def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    return float((pred == gold).mean()) if len(gold) else 0.0


def macro_f1(pred: np.ndarray, gold: np.ndarray) -> float:
    """Mean per-class F1 over the classes seen in gold or predictions (scikit-learn's ``average="macro"``)."""
    classes = np.union1d(pred, gold)
    scores = [f1_from_counts(np.sum((pred == c) & (gold == c)), np.sum(pred == c), np.sum(gold == c)) for c in classes]
    return float(np.mean(scores)) if scores else 0.0


def f1_from_counts(true_positives, predicted, actual) -> float:
    """2TP / (predicted + actual); 0 when nothing is predicted or gold (scikit-learn's zero_division default)."""
    return float(2 * true_positives / (predicted + actual)) if predicted + actual else 0.0


def micro_f1(pred: np.ndarray, gold: np.ndarray) -> float:
    """Multi-label F1 over every (example, label) decision; ``pred`` and ``gold`` are 0/1 arrays (examples, labels)."""
    pred, gold = pred.astype(bool), gold.astype(bool)
    return f1_from_counts(np.sum(pred & gold), pred.sum(), gold.sum())


def exact_match(pred: np.ndarray, gold: np.ndarray) -> float:
    """Share of examples whose predicted label set equals the gold set (UER-py's multi-label accuracy)."""
    return float(np.all(pred.astype(bool) == gold.astype(bool), axis=1).mean()) if len(gold) else 0.0


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; 0 when either side is constant (no linear association to measure, and model selection
    needs a number, not NaN)."""
    x, y = np.asarray(x, np.float64) - np.mean(x), np.asarray(y, np.float64) - np.mean(y)
    norm = np.sqrt(np.sum(x * x) * np.sum(y * y))
    return float(np.sum(x * y) / norm) if norm > 0 else 0.0


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of their positions (scipy's ``rankdata(method="average")``)."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)
    return (last - (counts - 1) / 2.0)[inverse]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of the average ranks."""
    return pearson(average_ranks(x), average_ranks(y))


# the shared model and input encoding -----------------------------------------------------------------------------
class ClassifierModel(Backbone):
    """Encoder + pooling + two-layer head of ``outputs`` units (UER-py's classifier / regression heads)."""

    def __init__(self, model_cfg, outputs: int, pooling: str, vocab=None):
        super().__init__(model_cfg, vocab)
        self.pooling = pooling
        self.output_layer_1 = nn.Linear(model_cfg.hidden_size, model_cfg.hidden_size)
        self.output_layer_2 = nn.Linear(model_cfg.hidden_size, outputs)
        self.apply(init_weights)

    def forward(self, src: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        pooled = pool(self.encode(src, seg), seg, self.pooling)
        return self.output_layer_2(torch.tanh(self.output_layer_1(pooled))).float()


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


class SentencePairTask(Task):
    """Reading and the model shared by the tasks of this file (and ranking): one feature per example, the
    ``label`` column parsed by ``parse_label`` (None: the row is skipped into the issues)."""

    class Config(ComponentConfig):
        pooling: Pooling = "first"

    extra_columns: tuple[str, ...] = ()  # further required columns, kept as strings in ``examples`` (dbqa: qid)
    label_type: pa.DataType = pa.int32()

    def read(self, path: Path, labelled: bool = True) -> TaskData:
        issues = RowIssues(path)
        required = (("label",) if labelled else ()) + ("text_a",) + self.extra_columns
        columns, lines = read_tsv(path, required, ("text_b",), issues)
        keep, labels = self._usable_rows(columns, lines, labelled, issues)
        text_a = [columns["text_a"][i] for i in keep]
        text_b = [columns["text_b"][i] for i in keep] if "text_b" in columns else None
        src, seg = encode_pairs(self.tokenizer, self.seq_length, text_a, text_b)
        ids = pa.array(np.arange(len(keep)))
        features = {"feature_id": ids, "example_id": ids, "src": ids_array(src), "seg": ids_array(seg)}
        examples = {"example_id": ids, "line": pa.array([lines[i] for i in keep], pa.int32())}
        examples.update({c: pa.array([columns[c][i] for i in keep], pa.string()) for c in self.extra_columns})
        if labelled:
            features["label"] = examples["label"] = pa.array(labels, self.label_type)
        return TaskData(pa.table(features), pa.table(examples), issues)

    def _usable_rows(self, columns, lines, labelled: bool, issues: RowIssues) -> tuple[list[int], list]:
        """Indices of the rows to keep and their parsed labels; the others go into ``issues``."""
        keep, labels = [], []
        for i, line in enumerate(lines):
            empty = [c for c in self.extra_columns if not columns[c][i].strip()]
            if empty:
                issues.skip(line, f"{empty[0]}_missing", f"{empty[0]} is empty")
                continue
            label = self.parse_label(columns["label"][i], line, issues) if labelled else None
            if label is not None or not labelled:
                keep.append(i)
                labels.append(label)
        return keep, labels

    def parse_label(self, raw: str, line: int, issues: RowIssues):
        raise NotImplementedError

    def head_size(self) -> int:
        raise NotImplementedError

    def build_model(self, model_cfg, vocab=None) -> nn.Module:
        return ClassifierModel(model_cfg, self.head_size(), self.cfg.pooling, vocab or self.tokenizer.vocab)


def parse_label_id(raw: str, labels_num: int | None, line: int, issues: RowIssues) -> int | None:
    """A class id in 0..labels_num-1 (any id >= 0 while labels_num is not known yet)."""
    try:
        label = int(raw)
    except ValueError:
        issues.skip(line, "label_not_an_integer", f"label {raw!r} is not an integer")
        return None
    if label < 0 or (labels_num is not None and label >= labels_num):
        where = f"outside 0..{labels_num - 1}" if labels_num else "negative"
        issues.skip(line, "label_out_of_range", f"label {label} is {where}")
        return None
    return label


def infer_labels_num(labels: pa.ChunkedArray, minimum: int) -> int:
    """1 + the largest label id of the training file."""
    flat = labels.combine_chunks()
    values = (flat.flatten() if pa.types.is_list(flat.type) else flat).to_numpy()
    return max(minimum, int(values.max()) + 1 if len(values) else minimum)


def loss_sums(loss: torch.Tensor, rows: int, correct: torch.Tensor | None = None) -> dict[str, float]:
    """Additive sums for ``summarise``: the mean loss times the rows, so that batches of any size average right."""
    sums = {"loss": float(loss.detach()) * rows, "count": float(rows)}
    if correct is not None:
        sums["correct"] = float(correct)
    return sums


# the tasks ---------------------------------------------------------------------------------------------------------
@TASKS.register("classification")
class Classification(SentencePairTask):
    """Sentence or sentence-pair classification (``text_b`` present -> pair); metrics accuracy (main), macro-F1."""

    class Config(SentencePairTask.Config):
        labels_num: int | None = Field(None, ge=2)  # None: 1 + the largest label in the training file

    @property
    def labels_num(self) -> int | None:
        return self.cfg.labels_num

    def parse_label(self, raw, line, issues):
        return parse_label_id(raw, self.labels_num, line, issues)

    def fit_labels(self, train: TaskData) -> None:
        if self.cfg.labels_num is None:
            self.cfg.labels_num = infer_labels_num(train.features.column("label"), 2)

    def head_size(self) -> int:
        return self.labels_num

    def loss(self, model, batch):
        logits = model(batch["src"], batch["seg"])
        loss = F.cross_entropy(logits, batch["label"])
        correct = (logits.argmax(-1) == batch["label"]).sum()
        return loss, loss_sums(loss, len(logits), correct)

    def predict(self, model, batch):
        probs = torch.softmax(model(batch["src"], batch["seg"]), -1)
        return {"pred": probs.argmax(-1).cpu().numpy(), "prob": probs.cpu().numpy()}

    def score(self, outputs, data):
        gold = data.features.column("label").to_numpy()
        return {"acc": accuracy(outputs["pred"], gold), "macro_f1": macro_f1(outputs["pred"], gold)}

    def write_predictions(self, outputs, data, path: Path) -> None:
        """UER-py's run_classifier_infer format (with --output_prob): ``label`` then the class probabilities."""
        write_rows(path, "label\tprob", zip(outputs["pred"].tolist(), map(format_probs, outputs["prob"])))


@TASKS.register("multi_label")
class MultiLabel(SentencePairTask):
    """Multi-label classification: ``label`` is comma-separated label ids (``0,3``); a sigmoid per label, trained
    with binary cross-entropy; a label is predicted when its probability >= ``threshold``. Metrics micro-F1 (main)
    and exact-match accuracy (every label of the example right)."""

    class Config(SentencePairTask.Config):
        labels_num: int | None = Field(None, ge=1)  # None: 1 + the largest label id in the training file
        threshold: float = Field(0.5, gt=0, lt=1)

    metric = "micro_f1"
    label_type = pa.list_(pa.int32())
    pad_values = {"label": -1}  # label id lists are padded with -1, dropped when they become multi-hot vectors

    def parse_label(self, raw, line, issues):
        if not raw.strip():
            issues.skip(line, "label_missing", "label is empty (expected comma-separated label ids, e.g. 0,3)")
            return None
        ids = set()
        for part in raw.split(","):
            label = parse_label_id(part.strip(), self.cfg.labels_num, line, issues)
            if label is None:  # one issue per row, at its first bad id
                return None
            ids.add(label)
        return sorted(ids)

    def fit_labels(self, train: TaskData) -> None:
        if self.cfg.labels_num is None:
            self.cfg.labels_num = infer_labels_num(train.features.column("label"), 1)

    def head_size(self) -> int:
        return self.cfg.labels_num

    def multi_hot(self, label_ids: torch.Tensor) -> torch.Tensor:
        """(batch, most ids) padded with -1 -> (batch, labels_num) 0/1 floats."""
        hot = F.one_hot(label_ids.clamp(min=0), self.cfg.labels_num) * (label_ids >= 0).unsqueeze(-1)
        return hot.amax(1).float()

    def loss(self, model, batch):
        logits = model(batch["src"], batch["seg"])
        gold = self.multi_hot(batch["label"])
        loss = F.binary_cross_entropy_with_logits(logits, gold)
        correct = ((torch.sigmoid(logits) >= self.cfg.threshold) == gold.bool()).all(-1).sum()
        return loss, loss_sums(loss, len(logits), correct)

    def predict(self, model, batch):
        probs = torch.sigmoid(model(batch["src"], batch["seg"]))
        return {"pred": (probs >= self.cfg.threshold).to(torch.int8).cpu().numpy(), "prob": probs.cpu().numpy()}

    def score(self, outputs, data):
        gold = np.zeros_like(outputs["pred"])
        for row, ids in enumerate(data.features.column("label").to_pylist()):
            gold[row, ids] = 1
        return {"micro_f1": micro_f1(outputs["pred"], gold), "exact_match": exact_match(outputs["pred"], gold)}

    def write_predictions(self, outputs, data, path: Path) -> None:
        """UER-py's run_classifier_multi_label_infer format (with --output_prob): the predicted label ids
        comma-separated (empty when none reaches the threshold), then the per-label probabilities."""
        labels = (",".join(str(i) for i in np.flatnonzero(row)) for row in outputs["pred"])
        write_rows(path, "label\tprob", zip(labels, map(format_probs, outputs["prob"])))


@TASKS.register("regression")
class Regression(SentencePairTask):
    """Regression on a float ``label`` (e.g. STS-B similarity): one output, mean squared error; metrics Pearson
    (main) and Spearman."""

    metric = "pearson"
    label_type = pa.float32()

    def parse_label(self, raw, line, issues):
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not np.isfinite(value):
            issues.skip(line, "label_not_a_number", f"label {raw!r} is not a finite number")
            return None
        return value

    def head_size(self) -> int:
        return 1

    def loss(self, model, batch):
        values = model(batch["src"], batch["seg"]).squeeze(-1)
        loss = F.mse_loss(values, batch["label"])
        return loss, loss_sums(loss, len(values))

    def predict(self, model, batch):
        return {"value": model(batch["src"], batch["seg"]).squeeze(-1).cpu().numpy()}

    def score(self, outputs, data):
        gold = data.features.column("label").to_numpy()
        return {"pearson": pearson(outputs["value"], gold), "spearman": spearman(outputs["value"], gold)}

    def write_predictions(self, outputs, data, path: Path) -> None:
        """UER-py's run_regression_infer format: a ``label`` header, then one predicted value a line."""
        write_rows(path, "label", ((np.float32(v),) for v in outputs["value"]))


# prediction files ----------------------------------------------------------------------------------------------------
def format_probs(probs: np.ndarray) -> str:
    """Space-separated, each the shortest text that reads back to the same float32 (rankings survive the file)."""
    return " ".join(str(np.float32(p)) for p in probs)


def write_rows(path: Path, header: str, rows) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(header + "\n")
        for row in rows:
            f.write("\t".join(str(field) for field in row) + "\n")

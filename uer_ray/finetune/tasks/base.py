"""The task contract: how a downstream task reads its files, the head it puts on the encoder, its loss, its
predictions, its metric and its prediction file. The fine-tuning stage drives every task through this contract alone;
a new task is one class, one registry line and one test.

Data flow (every split, every task):
    read(path) -> TaskData(features, examples, issues)     on the driver, before Ray starts; bad rows counted
    features: one row per model input (a sentence, a window of a long context, a question with its choices);
              always ``feature_id`` (0..n-1, row order) and ``example_id``; list columns are token ids etc.
    examples: one row per example (what scoring and the prediction file need: gold labels/answers, ids, lines);
              always ``example_id``
    collate(features slice) -> batch of tensors      on the training worker
    loss(model, batch) -> (loss, additive sums)      training; summarise(sums) -> train metrics
    predict(model, batch) -> {column: array}         row-aligned raw outputs (logits argmax, span scores, ...)
    score(outputs, data) -> {metric: value}          outputs of *all* features of a split, in feature_id order
    write_predictions(outputs, data, path)           UER-py's output formats
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from uer_ray.data.collate import column_array
from uer_ray.data.corpus import RepairLog
from uer_ray.errors import UserError


class DataError(UserError):
    """A downstream data file that cannot be used as it is; the message names the file and line."""


class RowIssues:
    """Bad rows of one file: each is skipped and counted by reason, with its line; the file is refused (``check``)
    when nothing usable is left or more than ``max_bad_fraction`` of its rows are bad."""

    def __init__(self, path: Path | str):
        self.path = str(path)
        self.log = RepairLog()
        self.repairs = RepairLog()  # rows kept after a change (cut, answer moved): counted, never refused

    def skip(self, line: int | str, reason: str, detail: str) -> None:
        self.log.add(reason, f"{Path(self.path).name}:{line}: {detail}")

    def repair(self, line: int | str, reason: str, detail: str) -> None:
        self.repairs.add(reason, f"{Path(self.path).name}:{line}: {detail}")

    @property
    def count(self) -> int:
        return sum(self.log.counts.values())

    def summary(self) -> str:
        """One line, e.g. ``train.tsv: 2 row(s) skipped: label_out_of_range 2 (train.tsv:5: label 7 is outside 0..1;
        ...); 1 repair(s): cut_to_seq_length 1 (...)``."""
        lines = [f"{n} {what}: " + _describe(log) for n, what, log in
                 ((self.count, "row(s) skipped", self.log), (sum(self.repairs.counts.values()), "repair(s)", self.repairs))
                 if n]
        return f"{self.path}: " + "; ".join(lines) if lines else ""

    def first(self, per_reason: int) -> str:
        """The first skipped rows of each reason, with their lines."""
        return "; ".join(e for examples in self.log.examples.values() for e in examples[:per_reason])

    def check(self, kept: int, max_bad_fraction: float) -> None:
        total = kept + self.count
        if kept == 0 or self.count > max_bad_fraction * total:
            first = self.first(3)
            raise DataError(
                f"{self.path}: {self.count} of {total} rows are unusable (more than {max_bad_fraction:.0%}), "
                f"so the file is refused: {first}" if kept else f"{self.path}: no usable row ({first or 'empty'})"
            )


@dataclass
class TaskData:
    features: pa.Table
    examples: pa.Table
    issues: RowIssues
    labelled: bool = True  # False: no gold labels (predicted, never scored)

    def __post_init__(self):
        for table, column in ((self.features, "feature_id"), (self.features, "example_id"), (self.examples, "example_id")):
            if column not in table.column_names:
                raise AssertionError(f"task data lacks the {column} column")  # a task bug, not a data error


def read_text(path: Path | str) -> str:
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None


def read_json(path: Path | str) -> Any:
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None


def read_tsv(
    path: Path | str, required: tuple[str, ...], optional: tuple[str, ...] = (), issues: RowIssues | None = None
) -> tuple[dict[str, list[str]], list[int]]:
    """Columns by name and the 1-based line number of each kept row. The header must name every required column;
    a row with another column count is skipped into ``issues`` (an error when ``issues`` is None)."""
    path = Path(path)
    lines = read_text(path).splitlines()
    if not lines:
        raise DataError(f"{path}: empty file (expected a header row: {', '.join(required)})")
    header = lines[0].split("\t")
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(
            f"{path}:1: header {header} lacks column(s) {', '.join(missing)} (expected {', '.join(required + optional)})"
        )
    wanted = [c for c in required + optional if c in header]
    index = {c: header.index(c) for c in wanted}
    columns: dict[str, list[str]] = {c: [] for c in wanted}
    line_numbers = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            message = f"expected {len(header)} tab-separated columns ({', '.join(header)}), found {len(fields)}"
            if issues is None:
                raise DataError(f"{path}:{number}: {message}")
            issues.skip(number, "wrong_column_count", message)
            continue
        for c in wanted:
            columns[c].append(fields[index[c]])
        line_numbers.append(number)
    return columns, line_numbers


def ids_array(rows: list[list[int]]) -> pa.Array:
    return pa.array(rows, type=pa.list_(pa.int32()))


class Task:
    """Subclasses set ``metric`` (the key of ``score``'s result that picks the best model; higher is better) and
    implement read / build_model / loss / predict / score / write_predictions."""

    metric: str = "acc"
    prediction_suffix: str = ".tsv"  # the prediction file's format (UER-py's: TSV, or JSON for QA)
    pad_values: dict[str, int] = {}  # list columns padded with these (default 0); "src" is padded with [PAD]

    def __init__(self, cfg, tokenizer, seq_length: int):
        self.cfg, self.tokenizer, self.seq_length = cfg, tokenizer, seq_length

    # reading -------------------------------------------------------------------------------------------------------
    def read(self, path: Path, labelled: bool = True) -> TaskData:
        raise NotImplementedError

    def corpus_lines(self, path: Path) -> Iterator[str]:
        """The file's text as a pre-training corpus, one example a line (UER's further pre-training on task text);
        the default reads a TSV's ``text_a`` and ``text_b`` columns."""
        columns, _ = read_tsv(path, ("text_a",), ("text_b",), RowIssues(path))
        for i, text in enumerate(columns["text_a"]):
            yield text + (columns["text_b"][i] if "text_b" in columns else "")

    def fit_labels(self, train: TaskData) -> None:
        """Settle what the training data decides (e.g. the label count) before dev and test are read."""

    # model -----------------------------------------------------------------------------------------------------------
    def build_model(self, model_cfg, vocab=None) -> nn.Module:
        raise NotImplementedError

    def collate(self, table: pa.Table) -> dict[str, torch.Tensor]:
        """Every numeric column as a tensor: list columns padded (``pad_values``; a list of lists to a 3-D tensor),
        floats stay float32."""
        pads = {"src": self.tokenizer.vocab.pad_id, **self.pad_values}
        batch = {}
        for field in table.schema:
            if _is_list(field.type) and _is_list(field.type.value_type):
                batch[field.name] = torch.from_numpy(pad_nested(table.column(field.name), pads.get(field.name, 0)))
            elif _is_list(field.type):
                batch[field.name] = torch.from_numpy(column_array(table, field.name, pads.get(field.name, 0)))
            elif pa.types.is_floating(field.type):
                batch[field.name] = torch.from_numpy(table.column(field.name).to_numpy().astype(np.float32))
            elif pa.types.is_integer(field.type):
                batch[field.name] = torch.from_numpy(table.column(field.name).to_numpy().astype(np.int64))
        return batch

    # training ------------------------------------------------------------------------------------------------------
    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def summarise(self, sums: dict[str, float], prefix: str) -> dict[str, float]:
        count = max(sums.get("count", 0.0), 1.0)
        metrics = {f"{prefix}loss": sums.get("loss", 0.0) / count}
        if "correct" in sums:
            metrics[f"{prefix}acc"] = sums["correct"] / count
        return metrics

    # evaluation ----------------------------------------------------------------------------------------------------
    def predict(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def score(self, outputs: dict[str, np.ndarray], data: TaskData) -> dict[str, float]:
        raise NotImplementedError

    def write_predictions(self, outputs: dict[str, np.ndarray], data: TaskData, path: Path) -> None:
        raise NotImplementedError


def _is_list(type_) -> bool:
    return pa.types.is_list(type_) or pa.types.is_large_list(type_)


def _describe(log: RepairLog) -> str:
    return ", ".join(f"{reason} {n} ({'; '.join(log.examples[reason][:2])})" for reason, n in sorted(log.counts.items()))


def pad_nested(column: pa.ChunkedArray | pa.Array, pad_value: int) -> np.ndarray:
    """``list<list<int>>`` (e.g. one token list per answer choice) -> (rows, most lists, longest list) int64."""
    rows = column.to_pylist()
    width = max((len(row) for row in rows), default=0)
    length = max((len(item) for row in rows for item in row), default=0)
    out = np.full((len(rows), width, length), pad_value, np.int64)
    for i, row in enumerate(rows):
        for j, item in enumerate(row):
            out[i, j, : len(item)] = item
    return out


def char_ids(tokenizer, chars: list[str]) -> list[int]:
    """One id per given character (never a subword split across them): the character's vocab id, else its
    lower-cased form's when the tokenizer lower-cases (BERT uncased vocabularies hold no capitals), else [UNK]."""
    ids, unk = tokenizer.vocab.token_ids, tokenizer.vocab.unk_id
    lower = getattr(tokenizer, "do_lower_case", False)
    return [ids.get(c, ids.get(c.lower(), unk) if lower else unk) for c in chars]

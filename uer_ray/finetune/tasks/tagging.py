"""Sequence labeling, e.g. NER (UER-py's run_ner): ``text_a`` = characters separated by spaces, ``label`` = one tag per
character. One token per given character (no [CLS]/[SEP], as UER-py); a linear head or a CRF on the encoder; entity
precision / recall / F1 counted like conlleval.

Outputs of ``predict``: ``pred`` is an object array holding, per row, the int tag ids of its tokens (no padding).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from pydantic import Field, FilePath
from torch import nn

from uer_ray.config import ComponentConfig
from uer_ray.finetune.tasks.base import DataError, RowIssues, Task, TaskData, char_ids, ids_array, read_json, read_tsv
from uer_ray.models.model import Backbone, init_weights
from uer_ray.registry import TASKS
from uer_ray.train.checkpoint import unwrap

IGNORE = -100  # tag id of padding: no loss, no accuracy


# entity metric (conlleval) --------------------------------------------------------------------------------------------
def _split_tag(tag: str) -> tuple[str, str]:
    """``B-LOC`` -> (B, LOC); ``O`` -> (O, ""); a tag without a type keeps an empty type (conlleval)."""
    prefix, _, kind = tag.partition("-")
    return prefix, kind


def _chunk_ends(prev: str, prev_kind: str, tag: str, kind: str) -> bool:
    if prev in ("B", "I") and tag in ("B", "S", "O"):
        return True
    if prev in ("E", "S"):
        return True
    return prev != "O" and prev_kind != kind


def _chunk_starts(prev: str, prev_kind: str, tag: str, kind: str) -> bool:
    if tag in ("B", "S"):
        return True
    if prev in ("E", "S", "O") and tag in ("E", "I"):
        return True
    return tag != "O" and prev_kind != kind


def entity_chunks(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """(type, first, last) of every entity, by conlleval's rules: an I- after O or after another type opens an
    entity (an ill-formed I- still counts); a new B-, an O or a change of type closes one. BIO and BIOES tags."""
    chunks, start = set(), None
    prev, prev_kind = "O", ""
    for i, tag in enumerate([*tags, "O"]):
        kind_tag, kind = _split_tag(tag)
        if start is not None and _chunk_ends(prev, prev_kind, kind_tag, kind):
            chunks.add((prev_kind, start, i - 1))
            start = None
        if _chunk_starts(prev, prev_kind, kind_tag, kind):
            start = i
        prev, prev_kind = kind_tag, kind
    return chunks


def entity_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, float]:
    """Micro precision / recall / F1 over the entities of every sentence (exact type and boundaries), in 0..1."""
    correct = found = expected = 0
    for gold_tags, pred_tags in zip(gold, pred, strict=True):
        gold_chunks, pred_chunks = entity_chunks(gold_tags), entity_chunks(pred_tags)
        correct += len(gold_chunks & pred_chunks)
        found += len(pred_chunks)
        expected += len(gold_chunks)
    precision = correct / found if found else 0.0
    recall = correct / expected if expected else 0.0
    f1 = 2 * precision * recall / (precision + recall) if correct else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


# CRF ---------------------------------------------------------------------------------------------------------------
class CRF(nn.Module):
    """Linear-chain CRF over per-token tag scores. ``mask`` marks each row's tokens, left-aligned, at least one."""

    def __init__(self, tags_num: int):
        super().__init__()
        self.start = nn.Parameter(torch.zeros(tags_num))
        self.end = nn.Parameter(torch.zeros(tags_num))
        self.transitions = nn.Parameter(torch.zeros(tags_num, tags_num))  # [from, to]

    def nll(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of ``tags`` per row: log Z (forward algorithm) minus the tags' score."""
        return self._log_partition(emissions, mask) - self._path_score(emissions, tags, mask)

    def _path_score(self, emissions, tags, mask):
        tags = tags.clamp(min=0)  # padding ids are masked out below
        keep = mask.to(emissions.dtype)
        emitted = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)
        moved = self.transitions[tags[:, :-1], tags[:, 1:]]
        last = tags.gather(1, (mask.sum(1) - 1).unsqueeze(1)).squeeze(1)
        return self.start[tags[:, 0]] + (emitted * keep).sum(1) + (moved * keep[:, 1:]).sum(1) + self.end[last]

    def _log_partition(self, emissions, mask):
        alpha = self.start + emissions[:, 0]
        for t in range(1, emissions.size(1)):
            step = torch.logsumexp(alpha.unsqueeze(2) + self.transitions + emissions[:, t].unsqueeze(1), dim=1)
            alpha = torch.where(mask[:, t : t + 1], step, alpha)
        return torch.logsumexp(alpha + self.end, dim=1)

    def decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Viterbi: the best tag sequence per row, (batch, seq); padding positions hold 0."""
        score, back = self.start + emissions[:, 0], []
        for t in range(1, emissions.size(1)):
            best, index = (score.unsqueeze(2) + self.transitions + emissions[:, t].unsqueeze(1)).max(dim=1)
            score = torch.where(mask[:, t : t + 1], best, score)
            back.append(index)
        last_tag = (score + self.end).argmax(dim=1)
        last_position = mask.sum(1) - 1
        path = torch.zeros_like(mask, dtype=torch.long)
        tag = last_tag
        for t in range(emissions.size(1) - 1, -1, -1):
            tag = torch.where(last_position == t, last_tag, tag)
            path[:, t] = tag
            if t:
                tag = torch.where(mask[:, t], back[t - 1].gather(1, tag.unsqueeze(1)).squeeze(1), tag)
        return path * mask


# model and task ----------------------------------------------------------------------------------------------------
class TaggerModel(Backbone):
    """Encoder + a linear layer giving each token a score per tag; + a CRF over the scores when ``crf``."""

    def __init__(self, model_cfg, tags_num: int, crf: bool, vocab=None):
        super().__init__(model_cfg, vocab)
        self.output_layer = nn.Linear(model_cfg.hidden_size, tags_num)
        self.crf = CRF(tags_num) if crf else None
        self.apply(init_weights)

    def forward(self, src: torch.Tensor, seg: torch.Tensor, tgt: torch.Tensor | None = None):
        """Tag scores (batch, seq, tags); with ``tgt`` also the loss (inside forward, so that DDP sees the CRF):
        per sequence with a CRF, per token without."""
        emissions = self.output_layer(self.encode(src, seg)).float()
        if tgt is None:
            return emissions
        if self.crf is not None:
            return emissions, self.crf.nll(emissions, tgt, tgt != IGNORE).mean()
        return emissions, F.cross_entropy(emissions.transpose(1, 2), tgt, ignore_index=IGNORE)

    def best_tags(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.crf.decode(emissions, mask) if self.crf is not None else emissions.argmax(-1)


def load_label2id(path: Path) -> list[str]:
    """UER-py's label2id.json ({tag: id}) -> the tags in id order; the ids must be 0..n-1."""
    mapping = read_json(path)
    if not isinstance(mapping, dict) or not all(isinstance(v, int) for v in mapping.values()):
        raise DataError(f"{path}: expected a JSON object mapping each tag to its integer id")
    if sorted(mapping.values()) != list(range(len(mapping))):
        raise DataError(f"{path}: tag ids must be 0..{len(mapping) - 1}, each once; found {sorted(mapping.values())}")
    return sorted(mapping, key=mapping.get)


@TASKS.register("tagging")
class Tagging(Task):
    """Token classification; sequences longer than ``seq_length`` are cut (counted) and their cut part predicted O."""

    metric = "f1"
    pad_values = {"tgt": IGNORE}

    class Config(ComponentConfig):
        label2id_path: FilePath | None = None  # UER-py's label2id.json; None: the tags of the training file, O first
        labels: list[str] | None = Field(None, min_length=1)  # the tag of each id; filled from the above
        crf: bool = False

    def __init__(self, cfg, tokenizer, seq_length: int):
        super().__init__(cfg, tokenizer, seq_length)
        if cfg.labels is None and cfg.label2id_path is not None:
            cfg.labels = load_label2id(cfg.label2id_path)

    # reading -------------------------------------------------------------------------------------------------------
    def corpus_lines(self, path: Path) -> Iterator[str]:
        """The sentences with their characters joined again."""
        columns, _ = read_tsv(path, ("text_a",), (), RowIssues(path))
        yield from ("".join(text.split(" ")) for text in columns["text_a"])

    def read(self, path: Path, labelled: bool = True) -> TaskData:
        issues = RowIssues(path)
        columns, lines = read_tsv(path, ("text_a", "label") if labelled else ("text_a",), (), issues)
        tag_id = {tag: i for i, tag in enumerate(self.cfg.labels)} if self.cfg.labels else None
        rows = []  # (line, characters, tags)
        for i, line in enumerate(lines):
            chars = columns["text_a"][i].split(" ")
            tags = columns["label"][i].split(" ") if labelled else None
            problem = self._problem(chars, tags, tag_id)
            if problem:
                issues.skip(line, *problem)
                continue
            if len(chars) > self.seq_length:
                issues.repair(line, "cut_to_seq_length", f"{len(chars)} characters cut to {self.seq_length}")
            rows.append((line, chars, tags))
        n = len(rows)
        src = [char_ids(self.tokenizer, chars[: self.seq_length]) for _, chars, _ in rows]
        features = {"feature_id": pa.array(np.arange(n)), "example_id": pa.array(np.arange(n)),
                    "src": ids_array(src), "seg": ids_array([[1] * len(s) for s in src])}
        examples = {"example_id": pa.array(np.arange(n)), "line": pa.array([r[0] for r in rows], pa.int32()),
                    "length": pa.array([len(r[1]) for r in rows], pa.int32())}
        if labelled:
            examples["tags"] = pa.array([r[2] for r in rows], pa.list_(pa.string()))
        data = TaskData(pa.table(features), pa.table(examples), issues)
        if labelled and tag_id is not None:
            self._add_tag_ids(data)
        return data

    def _problem(self, chars: list[str], tags: list[str] | None, tag_id: dict | None) -> tuple[str, str] | None:
        if "" in chars:
            return "empty_character", "empty text or two spaces in a row (characters are separated by one space)"
        if tags is None:
            return None
        if len(tags) != len(chars):
            return "tag_count_mismatch", f"{len(tags)} tags for {len(chars)} characters"
        unknown = sorted({t for t in tags if tag_id is not None and t not in tag_id})
        if unknown:
            return "unknown_tag", f"tag(s) {', '.join(map(repr, unknown))} not among {', '.join(tag_id)}"
        return None

    def _add_tag_ids(self, data: TaskData) -> None:
        tag_id = {tag: i for i, tag in enumerate(self.cfg.labels)}
        tags = data.examples.column("tags").to_pylist()
        data.features = data.features.append_column(
            "tgt", ids_array([[tag_id[t] for t in row[: self.seq_length]] for row in tags])
        )

    def fit_labels(self, train: TaskData) -> None:
        """Without ``label2id_path`` the tags are those of the training file (O first, then sorted); the training
        features get their tag ids here."""
        if self.cfg.labels is None:
            seen = {t for row in train.examples.column("tags").to_pylist() for t in row}
            self.cfg.labels = sorted(seen, key=lambda t: (t != "O", _split_tag(t)[1], t))
        if "tgt" not in train.features.column_names:
            self._add_tag_ids(train)

    # model -----------------------------------------------------------------------------------------------------------
    def build_model(self, model_cfg, vocab=None) -> nn.Module:
        if not self.cfg.labels:
            raise ValueError("tagging: the tag set is unknown; give label2id_path or read the training file first")
        return TaggerModel(model_cfg, len(self.cfg.labels), self.cfg.crf, vocab or self.tokenizer.vocab)

    def loss(self, model, batch):
        tgt = batch["tgt"]
        emissions, loss = model(batch["src"], batch["seg"], tgt)
        tagger, mask = unwrap(model), tgt != IGNORE
        tokens = int(mask.sum())
        units = len(tgt) if tagger.crf is not None else tokens  # what the loss is a mean over
        with torch.no_grad():
            correct = ((tagger.best_tags(emissions.detach(), mask) == tgt) & mask).sum()
        return loss, {"loss": float(loss.detach()) * units, "count": float(units),
                      "correct": float(correct), "tokens": float(tokens)}

    def summarise(self, sums, prefix):
        metrics = {f"{prefix}loss": sums.get("loss", 0.0) / max(sums.get("count", 0.0), 1.0)}
        if sums.get("tokens"):
            metrics[f"{prefix}acc"] = sums["correct"] / sums["tokens"]  # per token
        return metrics

    # evaluation ----------------------------------------------------------------------------------------------------
    def predict(self, model, batch):
        mask = batch["seg"] > 0
        tags = unwrap(model).best_tags(model(batch["src"], batch["seg"]), mask).cpu().numpy()
        lengths = mask.sum(1).tolist()
        pred = np.empty(len(lengths), dtype=object)
        for i, (row, n) in enumerate(zip(tags, lengths)):  # one by one: numpy would stack equal-length rows
            pred[i] = row[:n]
        return {"pred": pred}

    def predicted_tags(self, outputs, data: TaskData) -> list[list[str]]:
        """Tag strings per example, one per input character: the cut part of a long sequence is O."""
        lengths = data.examples.column("length").to_pylist()
        return [[self.cfg.labels[i] for i in row] + ["O"] * (n - len(row)) for row, n in zip(outputs["pred"], lengths)]

    def score(self, outputs, data):
        return entity_scores(data.examples.column("tags").to_pylist(), self.predicted_tags(outputs, data))

    def write_predictions(self, outputs, data, path: Path) -> None:
        """UER-py's run_ner_infer format: a ``pred_label`` header, then each line's tags separated by spaces."""
        with open(path, "w", encoding="utf-8") as f:
            f.write("pred_label\n")
            for tags in self.predicted_tags(outputs, data):
                f.write(" ".join(tags) + "\n")

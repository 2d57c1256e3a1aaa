"""Data processors: tokenized documents -> training instances (columns of a Parquet shard), one per target family.

A processor declares the corpus ``layout`` it reads and the targets it ``feeds``; the config check refuses a target
that the chosen processor cannot feed. Columns: ``src``/``seg`` (list<int32>; segment 1 = first sentence, 2 = second)
plus the targets' label columns (``tgt_sp``, and ``tgt_mlm`` when masking is static).
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from uer_ray.config import ComponentConfig
from uer_ray.data.masking import mask_tokens
from uer_ray.registry import PROCESSORS

Document = list[list[int]]  # sentences of token ids


class Processor:
    layout: str = "line"
    feeds: tuple[str, ...] = ()

    class Config(ComponentConfig):
        seq_length: int = Field(128, ge=8)
        dup_factor: int = Field(1, ge=1)  # passes over the corpus with different randomness
        masking: Literal["dynamic", "static"] = "dynamic"
        mask_prob: float = Field(0.15, gt=0, lt=1)

    def __init__(self, cfg, vocab):
        self.cfg = cfg
        self.vocab = vocab
        self.specials = np.array([vocab.pad_id, vocab.unk_id, vocab.cls_id, vocab.sep_id, vocab.mask_id])

    def instances(self, docs: list[Document], rng: np.random.Generator) -> dict[str, list]:
        raise NotImplementedError

    def build(self, docs: list[Document], rng: np.random.Generator) -> pa.Table:
        columns: dict[str, list] = {}
        for _ in range(self.cfg.dup_factor):
            for key, values in self.instances(docs, rng).items():
                columns.setdefault(key, []).extend(values)
        if self.cfg.masking == "static":
            columns["src"], columns["tgt_mlm"] = self._static_masks(columns["src"], rng)
        ids = pa.list_(pa.int32())
        schema = pa.schema([(k, ids if k in ("src", "seg", "tgt_mlm") else pa.int32()) for k in columns])
        return pa.table({k: pa.array(v, type=schema.field(k).type) for k, v in columns.items()}, schema=schema)

    def _static_masks(self, rows: list[list[int]], rng: np.random.Generator) -> tuple[list, list]:
        if not rows:
            return [], []
        lengths = np.array([len(r) for r in rows])
        src = np.zeros((len(rows), lengths.max()), dtype=np.int64)
        valid = np.arange(src.shape[1]) < lengths[:, None]
        src[valid] = np.concatenate(rows)
        maskable = valid & ~np.isin(src, self.specials)
        masked, labels = mask_tokens(src, maskable, self.vocab.mask_id, len(self.vocab), rng, self.cfg.mask_prob)
        return [m[:n].tolist() for m, n in zip(masked, lengths)], [l[:n].tolist() for l, n in zip(labels, lengths)]


def _truncate_pair(a: list[int], b: list[int], max_tokens: int, rng: np.random.Generator) -> None:
    """Google BERT's rule: trim the longer side, from the front or the back at random."""
    while len(a) + len(b) > max_tokens:
        longer = a if len(a) > len(b) else b
        del longer[0 if rng.random() < 0.5 else -1]


@PROCESSORS.register("bert")
class BertProcessor(Processor):
    """Sentence pairs for MLM + next-sentence prediction (Google BERT's create_pretraining_data)."""

    layout = "paragraph"
    feeds = ("mlm", "sp")

    class Config(Processor.Config):
        short_seq_prob: float = Field(0.1, ge=0, le=1)

    def instances(self, docs, rng):
        cls, sep = self.vocab.cls_id, self.vocab.sep_id
        src, seg, is_random = [], [], []
        max_tokens = self.cfg.seq_length - 3
        for doc_index, doc in enumerate(docs):
            target = max_tokens if rng.random() >= self.cfg.short_seq_prob else int(rng.integers(2, max_tokens + 1))
            chunk: list[list[int]] = []
            length = 0
            i = 0
            while i < len(doc):
                chunk.append(doc[i])
                length += len(doc[i])
                if i == len(doc) - 1 or length >= target:
                    a_end = 1 if len(chunk) < 2 else int(rng.integers(1, len(chunk)))
                    tokens_a = [t for s in chunk[:a_end] for t in s]
                    random_next = len(docs) > 1 and (len(chunk) == 1 or rng.random() < 0.5)
                    if random_next:
                        other = int(rng.integers(0, len(docs) - 1))
                        other_doc = docs[other + (other >= doc_index)]
                        start = int(rng.integers(0, len(other_doc)))
                        tokens_b: list[int] = []
                        for sentence in other_doc[start:]:
                            tokens_b.extend(sentence)
                            if len(tokens_b) >= target - len(tokens_a):
                                break
                        i -= len(chunk) - a_end  # the unused sentences start the next instance
                    else:
                        tokens_b = [t for s in chunk[a_end:] for t in s]
                    if tokens_a and tokens_b:
                        _truncate_pair(tokens_a, tokens_b, max_tokens, rng)
                        src.append([cls, *tokens_a, sep, *tokens_b, sep])
                        seg.append([1] * (len(tokens_a) + 2) + [2] * (len(tokens_b) + 1))
                        is_random.append(int(random_next))
                    chunk, length = [], 0
                i += 1
        return {"src": src, "seg": seg, "tgt_sp": is_random}


@PROCESSORS.register("mlm")
class MlmProcessor(Processor):
    """Packed full sentences for MLM only (RoBERTa): documents joined with [SEP], cut into seq_length pieces."""

    feeds = ("mlm",)

    class Config(Processor.Config):
        layout: Literal["line", "paragraph"] = "line"

    def __init__(self, cfg, vocab):
        super().__init__(cfg, vocab)
        self.layout = cfg.layout

    def instances(self, docs, rng):
        cls, sep = self.vocab.cls_id, self.vocab.sep_id
        stream: list[int] = []
        for doc in docs:
            for sentence in doc:
                stream.extend(sentence)
            stream.append(sep)
        body = self.cfg.seq_length - 2
        src = [[cls, *stream[i : i + body], sep] for i in range(0, len(stream), body) if len(stream[i : i + body]) > 1]
        return {"src": src, "seg": [[1] * len(s) for s in src]}

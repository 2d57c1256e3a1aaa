"""Helpers for the model tests (fixtures in conftest.py): a char vocabulary built from the reference corpora and
each processor's instances, built once per session."""
from __future__ import annotations

import collections
import itertools
from pathlib import Path

import numpy as np
import pytest

from uer_ray.config import ModelConfig
from uer_ray.data.corpus import RepairLog
from uer_ray.registry import PROCESSORS
from uer_ray.tokenizers import CharTokenizer, build_vocab

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "uer"
CORPORA = DATA / "corpora"
SEQ = 32


def head(path: Path, n: int) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in itertools.islice(f, n)]


def _texts():
    return {
        "line": [l[:400] for l in head(CORPORA / "CLUECorpusSmall_sampled.txt", 300) if l.strip()],
        "paragraph": head(CORPORA / "CLUECorpusSmall_bert_sampled.txt", 600),
        "cls": head(CORPORA / "book_review_cls.txt", 300)[1:],
        "mt": head(CORPORA / "news-commentary-v13-en-zh_sampled.txt", 300),
    }


def make_corpus_vocab():
    counts = collections.Counter(c for texts in _texts().values() for t in texts for c in t if not c.isspace())
    return build_vocab(counts, max_size=1500)


def _docs(layout: str, lines: list[str]) -> list[list[str]]:
    if layout == "paragraph":
        docs, doc = [], []
        for line in lines:
            if line.strip():
                doc.append(line)
            elif doc:
                docs.append(doc)
                doc = []
        return docs + ([doc] if doc else [])
    return [[line] for line in lines if line.strip()]


PROCESSOR_TEXT = {"bert": "paragraph", "albert": "paragraph", "mlm": "line", "lm": "line", "bilm": "line",
                  "ae": "line", "cls": "cls", "mt": "mt"}


def make_tables(corpus_vocab):
    """Processor name -> a pyarrow table of its instances (seq_length 32) from the real corpora."""
    texts = _texts()
    tokenizer = CharTokenizer(corpus_vocab)
    out = {}
    for name, kind in PROCESSOR_TEXT.items():
        cls = PROCESSORS.get(name)
        options = {"name": name, "seq_length": SEQ}
        if name == "mt":
            options["tgt_seq_length"] = SEQ
        processor = cls(cls.Config.model_validate(options), corpus_vocab)
        layout = "paragraph" if kind == "paragraph" else "line"
        docs = _docs(layout, texts[kind])
        table, _ = processor.process(docs, [f"{kind}:{i}" for i in range(len(docs))], tokenizer,
                                     np.random.default_rng(0), RepairLog())
        assert table.num_rows >= 32, (name, table.num_rows)
        out[name] = table
    return out


def tiny_model_config(vocab_size: int, encoder: dict, targets: dict, **extra) -> ModelConfig:
    return ModelConfig.model_validate({
        "vocab_size": vocab_size, "hidden_size": 32, "max_seq_length": 64,
        "embedding": {"parts": ["word", "pos", "seg"], "dropout": 0.0}, "encoder": encoder, "targets": targets,
        **extra,
    })

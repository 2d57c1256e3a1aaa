"""Helpers for the data tests: small corpora cut from the reference data, and a job builder."""
from __future__ import annotations

from pathlib import Path

import pytest

from uer_ray.config import build_config


@pytest.fixture(scope="session")
def vocab_path(data_dir) -> Path:
    return data_dir / "models" / "google_zh_vocab.txt"


def head_lines(src: Path, dst: Path, n: int) -> Path:
    with open(src, "rb") as f:
        lines = [next(f) for _ in range(n)]
    dst.write_bytes(b"".join(lines))
    return dst


def make_job(vocab_path, corpus, out_dir, processor: dict, targets=None, **data):
    """A validated job for ``processor``; processors whose targets another module registers are set after
    validation (the data stage never needs the model)."""
    job = build_config({
        "tokenizer": {"name": "bert", "vocab_path": str(vocab_path)},
        "data": {"corpus": [str(c) for c in corpus], "output_dir": str(out_dir), "processor": {"name": "mlm"},
                 **data},
        "model": {"targets": targets or {"mlm": 1.0}},
    })
    job.data.processor = processor
    return job

"""Helpers for the training tests: a tiny model and its config."""
from __future__ import annotations

import pytest
import torch

from uer_ray.config import build_config
from uer_ray.models.model import build_model


def tiny_job(**sections):
    spec = {
        "model": {"vocab_size": 50, "hidden_size": 32, "max_seq_length": 16,
                  "encoder": {"layers_num": 1, "heads_num": 2, "feedforward_size": 64}},
        "data": {"processor": {"name": "bert", "seq_length": 16}},
        **sections,
    }
    return build_config(spec)


@pytest.fixture()
def tiny():
    """(job, model) with dropout off, so equal inputs give equal gradients."""
    job = tiny_job(model={"vocab_size": 50, "hidden_size": 32, "max_seq_length": 16,
                          "embedding": {"dropout": 0.0},
                          "encoder": {"layers_num": 1, "heads_num": 2, "feedforward_size": 64, "dropout": 0.0}})
    torch.manual_seed(0)
    return job, build_model(job.model)


def batch(size: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return dict(src=torch.randint(5, 50, (size, 8), generator=g), seg=torch.ones(size, 8, dtype=torch.long),
                tgt_mlm=torch.randint(5, 50, (size, 8), generator=g), tgt_sp=torch.randint(0, 2, (size,), generator=g))

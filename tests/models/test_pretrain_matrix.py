"""The headline test: every encoder pre-trained with every target it can feed (plus weighted multi-target mixes and
a subencoder) for 30 steps on batches of real corpus instances, in-process; the loss must fall."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from uer_ray.config import ModelConfig
from uer_ray.data.collate import collate_instances
from uer_ray.models.model import build_model

from model_fixtures import tiny_model_config

ENCODERS = {
    "transformer": {"name": "transformer", "layers_num": 2, "heads_num": 2, "feedforward_size": 64, "dropout": 0.0},
    "rnn": {"name": "rnn", "layers_num": 1, "dropout": 0.0},
    "lstm": {"name": "lstm", "layers_num": 1, "dropout": 0.0},
    "gru": {"name": "gru", "layers_num": 1, "dropout": 0.0},
    "birnn": {"name": "birnn", "layers_num": 1, "dropout": 0.0},
    "bilstm": {"name": "bilstm", "layers_num": 1, "dropout": 0.0},
    "bigru": {"name": "bigru", "layers_num": 1, "dropout": 0.0},
    "cnn": {"name": "cnn", "layers_num": 2, "kernel_size": 3, "dropout": 0.0},
    "gatedcnn": {"name": "gatedcnn", "layers_num": 3, "kernel_size": 3, "block_size": 2, "dropout": 0.0},
}
UNIDIRECTIONAL_RNNS = ("rnn", "lstm", "gru")
# target -> (processor whose instances feed it, target options)
TARGETS = {
    "mlm": ("mlm", {}),
    "sp": ("bert", {}),
    "sop": ("albert", {}),
    "cls": ("cls", {"labels_num": 2}),
    "ae": ("ae", {}),
    "seq2seq": ("mt", {"decoder": {"layers_num": 1, "heads_num": 2, "feedforward_size": 64, "dropout": 0.0}}),
    "lm": ("lm", {}),
    "bilm": ("bilm", {}),
}


def _encoder(name: str, causal: bool) -> dict:
    enc = dict(ENCODERS[name])
    if name in ("transformer", "cnn", "gatedcnn"):
        enc["mask"] = "causal" if causal else "fully_visible"
    return enc


def _target_options(target: str, encoder: str) -> dict:
    options = dict(TARGETS[target][1])
    if target in ("sp", "sop", "cls") and encoder in UNIDIRECTIONAL_RNNS:
        options["pooling"] = "last"  # a forward RNN's first position has seen only [CLS]
    return {"weight": 1.0, **options}


def _feedable(target: str, encoder: str) -> bool:
    try:
        tiny_model_config(100, _encoder(encoder, target == "lm"), {target: _target_options(target, encoder)})
    except ValueError:
        return False
    return True


CASES = [
    pytest.param(encoder, {t: _target_options(t, encoder)}, TARGETS[t][0], target == "lm", {}, id=f"{encoder}-{t}")
    for t in TARGETS
    for encoder in ENCODERS
    if _feedable(t, encoder)
    for target in [t]
]
MIXES = [
    pytest.param("transformer", {"mlm": {"weight": 1.0}, "sp": {"weight": 0.5}}, "bert", False, {}, id="transformer-mlm1+sp0.5"),
    pytest.param("bilstm", {"mlm": {"weight": 1.0}, "sop": {"weight": 0.3}}, "albert", False, {}, id="bilstm-mlm1+sop0.3"),
    pytest.param(
        "transformer", {"lm": {"weight": 1.0}, "cls": {"weight": 0.3, "pooling": "last"}}, "cls", True, {},
        id="transformer_causal-lm1+cls0.3",
    ),
    pytest.param(
        "lstm", {"lm": {"weight": 1.0}}, "lm", True, {"subencoder": {"name": "cnn", "combine": "concat"}},
        id="lstm-lm-cnn_subencoder",
    ),
]


def test_matrix_covers_every_feedable_pair():
    pairs = {(e, t) for t in TARGETS for e in ENCODERS if _feedable(t, e)}
    refused = {(e, t) for t in TARGETS for e in ENCODERS} - pairs
    assert refused == {(e, "lm") for e in ("birnn", "bilstm", "bigru")} | {
        (e, "bilm") for e in ENCODERS if e not in ("birnn", "bilstm", "bigru")
    }
    assert len(CASES) == len(pairs) == 63


def pretrain_steps(cfg: ModelConfig, table, vocab, steps: int = 30, batch_size: int = 16, lr: float = 3e-3,
                   seed: int = 0) -> list[float]:
    torch.manual_seed(seed)
    model = build_model(cfg, vocab)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    slices = [table.slice(i * batch_size, batch_size) for i in range(2)]  # two fixed batches, cycled
    losses = []
    model.train()
    for step in range(steps):
        batch = collate_instances(slices[step % 2], cfg.targets, vocab, np.random.default_rng([seed, step]))
        out = model(batch)
        optimizer.zero_grad()
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(float(out["loss"].detach()))
        for name in cfg.targets:
            assert out[f"{name}_count"] > 0
            assert 0 <= out[f"{name}_correct"] <= out[f"{name}_count"]
    return losses


@pytest.fixture
def one_thread():
    """Tiny models: one intra-op thread is fastest, and robust when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("encoder, targets, processor, causal, extra", CASES + MIXES)
def test_pretrain_loss_falls(encoder, targets, processor, causal, extra, corpus_vocab, tables, one_thread):
    cfg = tiny_model_config(len(corpus_vocab), _encoder(encoder, causal), targets, **extra)
    start = time.perf_counter()
    losses = pretrain_steps(cfg, tables[processor], corpus_vocab)
    first, last = np.mean(losses[:4]), np.mean(losses[-4:])
    assert np.isfinite(losses).all()
    assert last < first * 0.9, f"{encoder} {list(targets)}: loss {first:.3f} -> {last:.3f} ({time.perf_counter() - start:.1f}s)"

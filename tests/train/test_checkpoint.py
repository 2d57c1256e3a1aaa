"""Checkpoints: safetensors + JSON + train state loaded with weights_only; no pickle executes on load."""
from __future__ import annotations

import pickle

import pytest
import torch

from uer_ray.config import build_config
from uer_ray.models.model import build_model
from uer_ray.tokenizers import Vocab
from uer_ray.train.checkpoint import load_config, load_train_state, load_weights, save_checkpoint
from uer_ray.train.loop import linear_schedule, make_optimizer


def tiny_model(vocab_size=50):
    spec = {
        "model": {
            "vocab_size": vocab_size, "hidden_size": 32, "max_seq_length": 16,
            "encoder": {"layers_num": 1, "heads_num": 2, "feedforward_size": 64},
        },
        "data": {"processor": {"name": "bert", "seq_length": 16}},
    }
    cfg = build_config(spec).model
    return cfg, build_model(cfg)


def test_round_trip_keeps_weights_ties_and_state(tmp_path):
    cfg, model = tiny_model()
    optimizer = make_optimizer(model, build_config({}).train)
    model(dict(src=torch.randint(5, 50, (2, 8)), seg=torch.ones(2, 8, dtype=torch.long),
               tgt_mlm=torch.randint(5, 50, (2, 8)), tgt_sp=torch.tensor([0, 1])))["loss"].backward()
    optimizer.step()
    vocab = Vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"t{i}" for i in range(45)])
    save_checkpoint(tmp_path / "ckpt", model, {"model": cfg.model_dump(mode="json")}, vocab,
                    {"optimizer": optimizer.state_dict(), "position": {"step": 3}})
    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert names == ["config.json", "model.safetensors", "train_state.pt", "vocab.txt"]

    _, again = tiny_model()
    load_weights(tmp_path / "ckpt", again)
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    # The MLM output layer stays tied to the word embedding after loading.
    assert again.targets["mlm"].linear_2.weight is again.embedding.word_weight
    assert load_train_state(tmp_path / "ckpt")["position"] == {"step": 3}
    assert load_config(tmp_path / "ckpt")["model"]["hidden_size"] == 32


def test_train_state_refuses_code(tmp_path):
    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "ckpt").mkdir()
    with open(tmp_path / "ckpt" / "train_state.pt", "wb") as f:
        pickle.dump({"x": Boom()}, f)
    with pytest.raises(pickle.UnpicklingError):
        load_train_state(tmp_path / "ckpt")


def test_linear_schedule_warms_up_then_decays():
    factor = linear_schedule(warmup_steps=10, total_steps=100)
    assert factor(0) == pytest.approx(0.1)
    assert factor(9) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.5)
    assert factor(100) == 0.0

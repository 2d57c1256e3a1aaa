"""Fine-tuning a checkpoint takes its model: architecture options that differ are refused with the key named, while
dropout rates are the fine-tuning's own (no Ray: a checkpoint's config.json is all this reads)."""
from __future__ import annotations

import json

import pytest

from uer_ray.config import ModelConfig, build_config
from uer_ray.errors import UserError
from uer_ray.finetune.finetune import adopt_pretrained


@pytest.fixture
def lstm_checkpoint(tmp_path):
    model = ModelConfig(vocab_size=50, hidden_size=32, emb_size=32, encoder={"name": "lstm", "layers_num": 1},
                        embedding={"parts": ["word"]}, targets={"lm": 1.0})
    config = {"model": model.model_dump(mode="json"), "tokenizer": {"name": "char", "vocab_path": "vocab.txt"}}
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcde"]), encoding="utf-8")
    return tmp_path


def adopted(checkpoint, *overrides):
    job = build_config({"finetune": {"pretrained": str(checkpoint)}}, list(overrides))
    adopt_pretrained(job)
    return job.model


def test_the_checkpoint_model_replaces_the_jobs(lstm_checkpoint):
    model = adopted(lstm_checkpoint)
    assert (model.encoder.name, model.hidden_size, model.embedding.parts) == ("lstm", 32, ["word"])


def test_dropout_rates_are_the_fine_tunings_own(lstm_checkpoint):
    # a name-less mapping (from --set) does not mean the default encoder: the checkpoint's stays
    model = adopted(lstm_checkpoint, "model.encoder.dropout=0.5", "model.embedding.dropout=0.3")
    assert (model.encoder.name, model.encoder.dropout, model.embedding.dropout) == ("lstm", 0.5, 0.3)
    assert model.encoder.layers_num == 1 and model.hidden_size == 32


@pytest.mark.parametrize("override, message", [
    ("model.hidden_size=64", "model.hidden_size: 64 contradicts the checkpoint's 32"),
    ("model.encoder.name=transformer", "model.encoder.name: 'transformer' contradicts the checkpoint's 'lstm'"),
])
def test_architecture_options_that_differ_are_refused(lstm_checkpoint, override, message):
    with pytest.raises(UserError, match=message):
        adopted(lstm_checkpoint, override)

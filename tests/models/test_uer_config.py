"""Every UER-py JSON model config in the reference data either builds the same architecture or is refused by name.

Models are instantiated on the meta device (no memory), so even ALBERT-xxlarge and T5-11B are counted; parameter
counts are checked against Hugging Face's implementations of the same architectures where one exists.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from uer_ray.config import ConfigError, ModelConfig, build_config
from uer_ray.models.model import build_model

from model_fixtures import DATA

CONFIGS = sorted((DATA / "models").glob("*/*.json"))
REFUSED = {"rnn/siamese_lstm_config.json": "unsupported UER-py encoder 'dual'"}
VOCAB = 100


def _name(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # shared (tied) parameters once


def _meta_model(path: Path, **overrides):
    cfg = ModelConfig.model_validate({"uer_config": str(path), "vocab_size": VOCAB, **overrides})
    with torch.device("meta"):
        return cfg, build_model(cfg)


def test_all_reference_configs_are_covered():
    assert {p.parent.name for p in CONFIGS} == {"bert", "rnn", "cnn", "gpt2", "albert", "transformer", "t5", "bart"}
    assert len(CONFIGS) == 31


@pytest.mark.parametrize("path", CONFIGS, ids=_name)
def test_uer_config_builds_or_is_refused(path):
    uer = json.loads(path.read_text())
    if _name(path) in REFUSED:
        with pytest.raises(ValueError, match=REFUSED[_name(path)]):
            ModelConfig.model_validate({"uer_config": str(path), "vocab_size": VOCAB})
        return
    cfg, model = _meta_model(path)
    enc = cfg.encoder
    assert cfg.hidden_size == uer["hidden_size"] and enc.name == uer["encoder"]
    assert (cfg.emb_size or cfg.hidden_size) == uer.get("emb_size", uer["hidden_size"])
    assert cfg.embedding.parts == uer["embedding"]
    assert cfg.embedding.layernorm == (not uer.get("remove_embedding_layernorm", False))
    assert cfg.tie_weights == uer.get("tie_weights", False)
    if enc.name == "transformer":
        assert (enc.layers_num, enc.heads_num, enc.feedforward_size, enc.hidden_act) == (
            uer["layers_num"], uer["heads_num"], uer["feedforward_size"], uer["hidden_act"])
        assert len(model.encoder.layers) == (1 if uer.get("parameter_sharing") else uer["layers_num"])
        assert (model.encoder.relative_pos_emb is not None) == uer.get("relative_position_embedding", False)
        layer = model.encoder.layers[0]
        assert (layer.self_attn.query.bias is None) == uer.get("remove_transformer_bias", False)
        assert layer.self_attn.head_size == uer.get("attention_head_size", uer["hidden_size"] // uer["heads_num"])
        assert layer.pre_norm == (uer.get("layernorm_positioning") == "pre")
    else:
        assert enc.layers_num == uer["layers_num"]
    if "decoder" in uer:
        assert list(cfg.targets) == ["seq2seq"]
        target = model.targets["seq2seq"]
        assert len(target.layers) == uer["decoder_layers_num"]
        assert list(target.tgt_embedding.parts) == uer["tgt_embedding"]
        if uer.get("share_embedding"):
            assert target.tgt_embedding.parts["word"] is model.embedding.parts["word"]
    else:
        assert list(cfg.targets) == uer["target"]


def _rnn_params(uer, layers_in, cell_gates, hidden, bi):
    total, inp = 0, layers_in
    for _ in range(uer["layers_num"]):
        total += (2 if bi else 1) * cell_gates * (hidden * (inp + hidden) + 2 * hidden)
        inp = hidden * (2 if bi else 1)
    return total


@pytest.mark.parametrize("name, gates", [("rnn/lstm_config.json", 4), ("rnn/gru_config.json", 3),
                                         ("rnn/bilstm_config.json", 4)])
def test_rnn_parameter_counts(name, gates):
    uer = json.loads((DATA / "models" / name).read_text())
    _, model = _meta_model(DATA / "models" / name)
    bi = uer["encoder"].startswith("bi")
    hidden = uer["hidden_size"] // (2 if bi else 1)
    expected = VOCAB * uer["emb_size"] + _rnn_params(uer, uer["emb_size"], gates, hidden, bi)
    expected += (2 if bi else 1) * hidden * VOCAB  # untied output layer(s), no bias (UER-py's default)
    assert _params(model) == expected


def test_gatedcnn_parameter_count():
    uer = json.loads((DATA / "models" / "cnn/gatedcnn_9_config.json").read_text())
    _, model = _meta_model(DATA / "models" / "cnn/gatedcnn_9_config.json")
    e, h, k, n = uer["emb_size"], uer["hidden_size"], uer["kernel_size"], uer["layers_num"]
    expected = VOCAB * e + 2 * (h * e * k + h) + (n - 1) * 2 * (h * h * k + h) + h * VOCAB
    assert _params(model) == expected


def _hf(kind: str, uer: dict):
    import transformers as hf

    h, ff, heads, layers = uer["hidden_size"], uer.get("feedforward_size"), uer["heads_num"], uer["layers_num"]
    if kind == "bert":
        config = hf.BertConfig(vocab_size=VOCAB, hidden_size=h, num_hidden_layers=layers, num_attention_heads=heads,
                               intermediate_size=ff, max_position_embeddings=uer["max_seq_length"])
        return hf.BertForPreTraining(config), h  # HF's token types: 2, UER-py's segments: 3 (one more row)
    if kind == "gpt2":
        config = hf.GPT2Config(vocab_size=VOCAB, n_embd=h, n_layer=layers, n_head=heads, n_positions=uer["max_seq_length"])
        return hf.GPT2LMHeadModel(config), 0
    if kind == "albert":
        config = hf.AlbertConfig(vocab_size=VOCAB, embedding_size=uer["emb_size"], hidden_size=h,
                                 num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=ff,
                                 max_position_embeddings=uer["max_seq_length"])
        return hf.AlbertForPreTraining(config), uer["emb_size"]
    if kind == "t5":
        config = hf.T5Config(vocab_size=VOCAB, d_model=h, d_kv=uer.get("attention_head_size", h // heads), d_ff=ff,
                             num_layers=layers, num_decoder_layers=uer["decoder_layers_num"], num_heads=heads)
        return hf.T5ForConditionalGeneration(config), 0
    raise AssertionError(kind)


@pytest.mark.parametrize("name", [
    "bert/tiny_config.json", "bert/base_config.json", "bert/large_config.json", "gpt2/config.json",
    "gpt2/distil_config.json", "albert/base_config.json", "albert/xxlarge_config.json", "t5/small_config.json",
    "t5/base_config.json", "t5/11b_config.json",
])
def test_parameter_counts_match_hugging_face(name):
    path = DATA / "models" / name
    uer = json.loads(path.read_text())
    # ALBERT's configs leave tie_weights out (UER-py: untied); Hugging Face ties: compare the tied form.
    _, model = _meta_model(path, tie_weights=True)
    with torch.device("meta"):
        reference, extra = _hf(name.split("/")[0], uer)
    assert _params(model) == _params(reference) + extra


def test_dual_is_refused_with_its_name():
    with pytest.raises(ConfigError, match="unsupported UER-py encoder 'dual'"):
        build_config({"model": {"uer_config": str(DATA / "models/rnn/siamese_lstm_config.json")}})


def test_unknown_uer_option_is_named(tmp_path):
    path = tmp_path / "odd.json"
    path.write_text(json.dumps({"hidden_size": 64, "heads_num": 2, "layers_num": 1, "alibi": True, "rope": 1}))
    with pytest.raises(ConfigError, match="unsupported UER-py option\\(s\\): alibi, rope"):
        build_config({"model": {"uer_config": str(path)}})
    path.write_text(json.dumps({"hidden_size": 64, "layers_num": 1, "encoder": "lstm", "heads_num": 2}))
    with pytest.raises(ConfigError, match="option\\(s\\) heads_num do not apply to encoder 'lstm'"):
        build_config({"model": {"uer_config": str(path)}})

"""Targets: labels derived from src, the bilm halves, the seq2seq decoder, subencoders, config-time refusals."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from uer_ray.config import ConfigError, build_config
from uer_ray.data.masking import IGNORE
from uer_ray.models.model import build_model
from uer_ray.models.subencoders import decompose
from uer_ray.models.targets import BilmTarget, LmTarget, Seq2seqTarget, pool, token_classification
from uer_ray.tokenizers import build_vocab

from model_fixtures import tiny_model_config

V = 40


class _Vocab:
    pad_id = 0


def test_lm_and_bilm_labels_are_shifts_of_src():
    src = np.array([[2, 7, 8, 9, 3], [2, 5, 3, 0, 0]])
    seg = (src > 0).astype(np.int64)
    batch = {"src": src, "seg": seg}
    LmTarget.prepare_labels(batch, None, None, None, None)
    assert batch["tgt_lm"].tolist() == [[7, 8, 9, 3, IGNORE], [5, 3, IGNORE, IGNORE, IGNORE]]
    BilmTarget.prepare_labels(batch, None, None, None, None)
    assert batch["tgt_bilm"].tolist() == batch["tgt_lm"].tolist()
    assert batch["tgt_bilm_backward"].tolist() == [[IGNORE, 2, 7, 8, 9], [IGNORE, 2, 5, IGNORE, IGNORE]]


def test_seq2seq_labels_and_decoder_is_causal():
    table = pa.table({"tgt_seq2seq": pa.array([[2, 11, 12, 3], [2, 13, 3]], pa.list_(pa.int32()))})
    batch = {}
    Seq2seqTarget.prepare_labels(batch, table, None, _Vocab, None)
    assert batch["tgt_seq2seq_in"].tolist() == [[2, 11, 12], [2, 13, 0]]
    assert batch["tgt_seq2seq"].tolist() == [[11, 12, 3], [13, 3, IGNORE]]

    cfg = tiny_model_config(V, {"name": "transformer"}, {"seq2seq": {"decoder": {"layers_num": 2},
                                                                     "tgt_embedding": ["word", "sinusoidalpos"]}})
    model = build_model(cfg).eval()
    target = model.targets["seq2seq"]
    src = torch.randint(5, V, (2, 7))
    memory = model.encode(src, torch.ones_like(src))
    tgt = torch.randint(5, V, (2, 6))
    changed = tgt.clone()
    changed[:, 4:] = (changed[:, 4:] + 1) % V
    a = target.decode(memory, torch.ones_like(src), tgt)
    b = target.decode(memory, torch.ones_like(src), changed)
    torch.testing.assert_close(a[:, :4], b[:, :4])
    # Cross-attention reads the source; padding of the source is ignored.
    seg = torch.ones_like(src)
    seg[:, 5:] = 0
    other = src.clone()
    other[:, 5:] = 1
    torch.testing.assert_close(
        target.decode(model.encode(src, seg), seg, tgt), target.decode(model.encode(other, seg), seg, tgt)
    )
    assert not torch.allclose(target.decode(memory, torch.ones_like(src), tgt),
                              target.decode(model.encode(other, torch.ones_like(src)), torch.ones_like(src), tgt))


def test_seq2seq_share_embedding_and_tied_output():
    cfg = tiny_model_config(V, {"name": "transformer"}, {"seq2seq": {"decoder": {"layers_num": 1}, "share_embedding": True}})
    model = build_model(cfg)
    target = model.targets["seq2seq"]
    assert target.tgt_embedding.parts["word"] is model.embedding.parts["word"]
    assert target.output_layer.weight is model.embedding.word_weight
    separate = build_model(tiny_model_config(V, {"name": "transformer"},
                                             {"seq2seq": {"decoder": {"layers_num": 1}, "tgt_vocab_size": 60}}))
    assert separate.targets["seq2seq"].output_layer.weight.shape == (60, 32)
    assert separate.targets["seq2seq"].tgt_embedding.word_weight.shape == (60, 32)


def test_decoder_inherits_encoder_options():
    cfg = tiny_model_config(V, {"name": "transformer", "heads_num": 4, "feedforward_size": 40,
                                "layernorm_positioning": "pre", "relative_position_embedding": True},
                            {"seq2seq": {"decoder": {"layers_num": 1, "feedforward_size": 24}}})
    target = build_model(cfg).targets["seq2seq"]
    layer = target.layers[0]
    assert layer.self_attn.heads_num == 4 and layer.pre_norm
    assert layer.feed_forward.linear_1.weight.shape == (24, 32)
    assert target.relative_pos_emb is not None and not target.relative_pos_emb.bidirectional


def test_lm_and_mlm_output_tied_to_word_embedding():
    model = build_model(tiny_model_config(V, {"name": "transformer", "mask": "causal"}, {"lm": 1.0}))
    assert model.targets["lm"].output_layer.weight is model.embedding.word_weight
    assert model.targets["lm"].output_layer.bias is None
    untied = build_model(tiny_model_config(V, {"name": "lstm"}, {"lm": {"bias": True}}, tie_weights=False))
    assert untied.targets["lm"].output_layer.weight is not untied.embedding.word_weight
    assert untied.targets["lm"].output_layer.bias is not None


@pytest.mark.parametrize("encoder, target", [("lstm", "lm"), ("bilstm", "bilm")])
def test_adaptive_softmax_scores_like_its_full_log_probabilities(encoder, target):
    model = build_model(tiny_model_config(V, {"name": encoder}, {target: {"adaptive_cutoffs": [8, 20]}})).eval()
    src = torch.randint(5, V, (3, 10))
    batch = {"src": src.numpy(), "seg": np.ones((3, 10), np.int64)}
    {"lm": LmTarget, "bilm": BilmTarget}[target].prepare_labels(batch, None, None, None, None)
    batch = {k: torch.as_tensor(v) for k, v in batch.items()}
    out = model(batch)
    hidden = model.encode(batch["src"], batch["seg"])
    log_probs = model.target_logits(target, hidden)
    log_probs = log_probs if isinstance(log_probs, tuple) else (log_probs,)
    columns = [batch[f"tgt_{target}"]] + ([batch["tgt_bilm_backward"]] if target == "bilm" else [])
    assert log_probs[0].shape == (3, 10, V)
    torch.testing.assert_close(log_probs[0].exp().sum(-1), torch.ones(3, 10))
    expected = [token_classification(lp[labels != IGNORE], labels[labels != IGNORE])
                for lp, labels in zip(log_probs, columns)]
    torch.testing.assert_close(out[f"{target}_loss"], sum(e.loss for e in expected) / len(expected))
    assert out[f"{target}_correct"] == sum(e.correct for e in expected)
    assert out[f"{target}_count"] == sum(e.count for e in expected) == len(columns) * 3 * 9
    out["loss"].backward()
    assert model.embedding.word_weight.grad.abs().sum() > 0


def test_adaptive_cutoffs_are_checked_at_config_time():
    with pytest.raises(ConfigError, match=r"adaptive_cutoffs must be positive and strictly increasing, got \[20, 8\]"):
        _job({"encoder": "lstm", "targets": {"lm": {"adaptive_cutoffs": [20, 8]}}}, "lm")
    with pytest.raises(ConfigError, match=r"target bilm: adaptive_cutoffs \[8, 40\] must stay below the vocabulary "
                                          r"size \(40\)"):
        _job({"encoder": "bilstm", "vocab_size": 40, "targets": {"bilm": {"adaptive_cutoffs": [8, 40]}}}, "bilm")
    # an adaptive softmax is never tied, so emb_size may differ from hidden_size
    _job({"encoder": "lstm", "emb_size": 16, "vocab_size": 40, "targets": {"lm": {"adaptive_cutoffs": [8]}}}, "lm")


def test_poolings_use_only_the_real_tokens():
    # two sentences of 3 and 2 tokens, padded to 4; hidden[b, t] = [b*12 + t*3, +1, +2]
    hidden = torch.arange(24, dtype=torch.float).view(2, 4, 3)
    seg = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    assert pool(hidden, seg, "first").tolist() == [[0, 1, 2], [12, 13, 14]]
    assert pool(hidden, seg, "last").tolist() == [[6, 7, 8], [15, 16, 17]]  # tokens 2 and 1, not the padding
    assert pool(hidden, seg, "max").tolist() == [[6, 7, 8], [15, 16, 17]]
    assert pool(hidden, seg, "mean").tolist() == [[3, 4, 5], [13.5, 14.5, 15.5]]  # (0+3+6)/3, (12+15)/2


def test_cls_pooling():
    model = build_model(tiny_model_config(V, {"name": "transformer"}, {"cls": {"labels_num": 5, "pooling": "max"}}))
    src = torch.randint(5, V, (3, 8))
    out = model({"src": src, "seg": torch.ones_like(src), "tgt_cls": torch.tensor([0, 4, 2])})
    assert out["cls_count"] == 3 and torch.isfinite(out["loss"])
    assert model.targets["cls"].linear_2.out_features == 5


def test_subencoder_decomposes_words():
    vocab = build_vocab({"cat": 3, "cats": 2, "##s": 1, "dog": 1})
    table, pieces = decompose(vocab.tokens, max_pieces=3)
    assert pieces[0] == "<pad>"
    cats = table[vocab.token_to_id("cats")].tolist()
    assert cats[:3] == table[vocab.token_to_id("cat")].tolist()[:3]  # truncated to 3 pieces
    suffix = table[vocab.token_to_id("##s")].tolist()
    assert suffix[0] == pieces.index("s") and suffix[1:] == [0, 0]
    assert table[vocab.cls_id].tolist()[1:] == [0, 0]


@pytest.mark.parametrize("name", ["cnn", "rnn", "lstm", "gru"])
@pytest.mark.parametrize("combine", ["sum", "concat"])
@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_subencoders(name, combine, pooling):
    vocab = build_vocab({w: 1 for w in ["cat", "cats", "dog", "dogs", "a", "the"]})
    cfg = tiny_model_config(len(vocab), {"name": "transformer"}, {"mlm": 1.0},
                            subencoder={"name": name, "combine": combine, "pooling": pooling})
    with pytest.raises(ValueError, match="needs the word vocabulary"):
        build_model(cfg)
    model = build_model(cfg, vocab)
    sub = model.embedding.subencoder
    ids = torch.tensor([[vocab.token_to_id("cat"), vocab.token_to_id("dog"), vocab.token_to_id("cat")]])
    vectors = sub(ids)
    assert vectors.shape == (1, 3, 32)
    torch.testing.assert_close(vectors[0, 0], vectors[0, 2])
    assert not torch.allclose(vectors[0, 0], vectors[0, 1])
    emb = model.embedding(ids, torch.ones_like(ids))
    (emb * torch.randn_like(emb)).sum().backward()
    assert sub.piece_embedding.weight.grad.abs().sum() > 0
    assert "embedding.subencoder.pieces" in model.state_dict()


# -- config-time refusals, with the messages users see ------------------------------------------------------------------
def _job(model: dict, processor: str = "bert") -> None:
    build_config({"data": {"processor": {"name": processor, "seq_length": 64}},
                  "model": {"hidden_size": 32, "max_seq_length": 64, **model}})


@pytest.mark.parametrize("encoder", ["transformer", "lstm", "gatedcnn"])
def test_bilm_needs_a_bidirectional_rnn(encoder):
    with pytest.raises(ConfigError, match=f"target bilm needs a bidirectional RNN encoder .*not {encoder}"):
        _job({"encoder": encoder, "targets": {"bilm": 1.0}}, "bilm")
    _job({"encoder": "bigru", "targets": {"bilm": 1.0}}, "bilm")


def test_lm_needs_a_causal_encoder():
    with pytest.raises(ConfigError, match="target lm needs a causal encoder.*encoder bilstm"):
        _job({"encoder": "bilstm", "targets": {"lm": 1.0}}, "lm")
    with pytest.raises(ConfigError, match="target lm needs a causal encoder.*encoder transformer"):
        _job({"encoder": {"name": "transformer", "mask": "fully_visible"}, "targets": {"lm": 1.0}}, "lm")
    with pytest.raises(ConfigError, match=r"needs emb_size \(16\) == hidden_size \(32\)"):
        _job({"encoder": "lstm", "emb_size": 16, "targets": {"lm": 1.0}}, "lm")
    _job({"encoder": {"name": "transformer", "mask": "causal"}, "targets": {"lm": 1.0}}, "lm")


@pytest.mark.parametrize("target, processor", [("sp", "mlm"), ("sop", "bert"), ("sp", "lm"), ("sop", "mlm")])
def test_sp_and_sop_need_the_bert_or_albert_processor(target, processor):
    with pytest.raises(ConfigError, match=f"data processor '{processor}' cannot feed target\\(s\\) {target}; it feeds"):
        _job({"targets": {"mlm": 1.0, target: 1.0}} if processor != "lm" else {"targets": {target: 1.0}}, processor)
    _job({"targets": {"mlm": 1.0, "sop": 1.0}}, "albert")
    _job({"targets": {"mlm": 1.0, "sp": 1.0}}, "bert")


def test_seq2seq_needs_a_decoder():
    with pytest.raises(ConfigError, match=r"target seq2seq needs a decoder config: model.targets.seq2seq.decoder"):
        _job({"targets": {"seq2seq": 1.0}}, "mt")
    _job({"targets": {"seq2seq": {"decoder": {"layers_num": 1}}}}, "mt")
    with pytest.raises(ConfigError, match="not divisible by decoder heads_num 5"):
        _job({"targets": {"seq2seq": {"decoder": {"layers_num": 1, "heads_num": 5}}}}, "mt")


def test_hidden_size_must_divide_by_heads():
    with pytest.raises(ConfigError, match="hidden_size 32 is not divisible by encoder.heads_num 3"):
        _job({"encoder": {"name": "transformer", "heads_num": 3}})


def test_unknown_subencoder_and_options():
    with pytest.raises(ConfigError, match="unknown subencoder 'bpe'; known subencoders: cnn, gru, lstm, rnn"):
        _job({"subencoder": "bpe"})
    with pytest.raises(ConfigError, match=r"model.subencoder.pool: unknown key \(allowed: .*pooling"):
        _job({"subencoder": {"name": "cnn", "pool": "mean"}})
    with pytest.raises(ConfigError, match=r"model.encoder.kernel: unknown key \(allowed: .*kernel_size"):
        _job({"encoder": {"name": "gatedcnn", "kernel": 3}})

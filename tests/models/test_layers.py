"""Unit tests of the model parts: shapes, causal masks, padding, relative position bias, parameter sharing, gated FFN,
the CPU dropout and the attention written out for it, bidirectional RNNs against packed sequences."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from uer_ray.models.embeddings import SinusoidalPositionEmbedding
from uer_ray.models.encoders import rnn_states
from uer_ray.models.layers import GatedFeedForward, MultiHeadAttention, RelativePositionBias, attention, dropout
from uer_ray.models.model import build_model

from model_fixtures import tiny_model_config

V = 50


def _inputs(batch=2, seq=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(5, V, (batch, seq), generator=g)
    return src, torch.ones_like(src)


def _backbone(encoder: dict, **extra):
    cfg = tiny_model_config(V, encoder, {"mlm": 1.0}, **extra)
    return build_model(cfg).eval()


ALL_ENCODERS = [
    {"name": "transformer", "heads_num": 4},
    {"name": "transformer", "mask": "causal", "layernorm_positioning": "pre"},
    *({"name": n} for n in ("rnn", "lstm", "gru", "birnn", "bilstm", "bigru")),
    {"name": "cnn", "layers_num": 3},
    {"name": "gatedcnn", "layers_num": 5, "block_size": 2},
]


@pytest.mark.parametrize("encoder", ALL_ENCODERS, ids=lambda e: e["name"] + "-" + e.get("mask", ""))
@pytest.mark.parametrize("emb_size", [None, 16])
def test_encoder_shapes(encoder, emb_size):
    model = _backbone(encoder, emb_size=emb_size, tie_weights=False)
    src, seg = _inputs()
    seg[1, 8:] = 0
    hidden = model.encode(src, seg)
    assert hidden.shape == (2, 12, 32)
    assert torch.isfinite(hidden).all()
    if encoder["name"] != "transformer" and emb_size:  # RNN/CNN read emb_size inputs: no projection
        assert isinstance(model.embedding.projection, torch.nn.Identity)


CAUSAL = [
    {"name": "transformer", "mask": "causal"},
    {"name": "transformer", "mask": "causal", "relative_position_embedding": True},
    {"name": "rnn"}, {"name": "lstm"}, {"name": "gru"},
    {"name": "cnn", "mask": "causal", "layers_num": 3},
    {"name": "gatedcnn", "layers_num": 5},
]


@pytest.mark.parametrize("encoder", CAUSAL, ids=lambda e: "-".join(str(v) for v in e.values()))
def test_causal_encoders_do_not_see_the_future(encoder):
    model = _backbone(encoder)
    src, seg = _inputs()
    changed = src.clone()
    changed[:, 7:] = (changed[:, 7:] + 3) % V
    a, b = model.encode(src, seg), model.encode(changed, seg)
    torch.testing.assert_close(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


@pytest.mark.parametrize("encoder", [{"name": "transformer"}, {"name": "bilstm"}, {"name": "cnn"},
                                     {"name": "gatedcnn", "mask": "fully_visible"}], ids=lambda e: e["name"])
def test_bidirectional_encoders_see_the_future(encoder):
    model = _backbone(encoder)
    src, seg = _inputs()
    changed = src.clone()
    changed[:, 7:] = (changed[:, 7:] + 3) % V
    assert not torch.allclose(model.encode(src, seg)[:, 6], model.encode(changed, seg)[:, 6])


def test_padding_does_not_leak_into_transformer_states():
    model = _backbone({"name": "transformer"})
    src, seg = _inputs()
    seg[:, 9:] = 0
    changed = src.clone()
    changed[:, 9:] = 0
    torch.testing.assert_close(model.encode(src, seg)[:, :9], model.encode(changed, seg)[:, :9])


def test_relative_position_buckets():
    bias = RelativePositionBias(heads_num=3, bidirectional=True, buckets_num=32, max_distance=128)
    rel = torch.arange(-300, 301)
    buckets = bias.bucket(rel)
    assert buckets.min() >= 0 and buckets.max() < 32
    assert len(set(buckets[rel < 0].tolist()) & set(buckets[rel > 0].tolist())) == 0  # direction is kept
    assert bias.bucket(torch.arange(0, 8)).tolist() == [0, 17, 18, 19, 20, 21, 22, 23]
    from transformers.models.t5.modeling_t5 import T5Attention  # the reference bucketing

    for bidirectional in (True, False):
        ours = RelativePositionBias(3, bidirectional).bucket(rel)
        reference = T5Attention._relative_position_bucket(rel, bidirectional=bidirectional, num_buckets=32, max_distance=128)
        assert ours.tolist() == reference.tolist()
    assert bias.bucket(torch.tensor([200])) == bias.bucket(torch.tensor([128]))  # saturates at max_distance
    causal = RelativePositionBias(heads_num=3, bidirectional=False)
    assert (causal.bucket(torch.arange(1, 50)) == 0).all()  # future offsets share one bucket (masked anyway)
    assert causal.bucket(torch.tensor([-1, -2])).tolist() == [1, 2]
    out = bias(5, 7)
    assert out.shape == (1, 3, 5, 7)
    # Translation invariance: the bias depends only on key - query.
    torch.testing.assert_close(out[0, :, 1, 2], out[0, :, 3, 4])


def test_relative_position_embedding_is_used_and_shared():
    model = _backbone({"name": "transformer", "relative_position_embedding": True, "layers_num": 3})
    names = [n for n, _ in model.named_parameters() if "relative" in n]
    assert names == ["encoder.relative_pos_emb.relative_attention_bias.weight"]
    src, seg = _inputs()
    before = model.encode(src, seg)
    with torch.no_grad():
        model.encoder.relative_pos_emb.relative_attention_bias.weight.normal_()
    assert not torch.allclose(before, model.encode(src, seg))
    # Without absolute positions the model is still position-aware through the bias.
    cfg = {"embedding": {"parts": ["word"], "dropout": 0.0}}
    plain = _backbone({"name": "transformer"}, **cfg)
    relative = _backbone({"name": "transformer", "relative_position_embedding": True}, **cfg)
    src, seg = _inputs(batch=1, seq=6)
    perm = torch.tensor([5, 3, 1, 0, 2, 4])
    # Without positions, attention is permutation-equivariant; the relative bias breaks that.
    torch.testing.assert_close(plain.encode(src[:, perm], seg), plain.encode(src, seg)[:, perm])
    assert not torch.allclose(relative.encode(src[:, perm], seg), relative.encode(src, seg)[:, perm])


def test_parameter_sharing_shares():
    shared = _backbone({"name": "transformer", "layers_num": 6, "parameter_sharing": True})
    assert len(shared.encoder.layers) == 1
    three = _backbone({"name": "transformer", "layers_num": 3, "parameter_sharing": True})
    count = lambda m: sum(p.numel() for p in m.encoder.parameters())
    assert count(shared) == count(three)
    unshared = _backbone({"name": "transformer", "layers_num": 6})
    assert count(unshared) == 6 * count(three)
    # The one layer really runs layers_num times: 6 shared passes differ from 3.
    with torch.no_grad():
        three.load_state_dict(shared.state_dict())
    src, seg = _inputs()
    assert not torch.allclose(shared.encode(src, seg), three.encode(src, seg))


def test_gated_feed_forward():
    model = _backbone({"name": "transformer", "feed_forward": "gated", "feedforward_size": 48})
    ff = model.encoder.layers[0].feed_forward
    assert isinstance(ff, GatedFeedForward)
    assert ff.linear_gate.weight.shape == ff.linear_1.weight.shape == (48, 32)
    x = torch.randn(2, 3, 32)
    expected = ff.linear_2(torch.nn.functional.gelu(ff.linear_gate(x)) * ff.linear_1(x))
    torch.testing.assert_close(ff(x), expected)


def test_remove_bias_and_attention_scale_and_head_size():
    model = _backbone({"name": "transformer", "remove_transformer_bias": True, "remove_attention_scale": True,
                       "attention_head_size": 4, "heads_num": 2}, layernorm="t5")
    layer = model.encoder.layers[0]
    assert layer.self_attn.query.bias is None and layer.feed_forward.linear_1.bias is None
    assert layer.self_attn.query.weight.shape == (8, 32)
    attn = MultiHeadAttention(8, 2, 0.0, scale=False)
    x = torch.randn(1, 3, 8)
    q, k, v = (attn._split(f(x)) for f in (attn.query, attn.key, attn.value))
    manual = torch.softmax(q @ k.transpose(-1, -2), -1) @ v  # no 1/sqrt(d)
    torch.testing.assert_close(attn(x, x, None), attn.output(manual.transpose(1, 2).reshape(1, 3, 8)))


def test_sinusoidal_positions():
    cfg = tiny_model_config(V, {"name": "transformer"}, {"mlm": 1.0}, max_seq_length=20)
    pos = SinusoidalPositionEmbedding(cfg, 8)
    out = pos(torch.zeros(1, 5, dtype=torch.long), None)
    assert out.shape == (1, 5, 8) and list(pos.parameters()) == []
    torch.testing.assert_close(out[0, 0], torch.tensor([0.0, 1.0] * 4))
    assert torch.allclose(out[0, 3, 0], torch.sin(torch.tensor(3.0)))


def test_weighted_targets_sum():
    cfg = tiny_model_config(V, {"name": "transformer"}, {"mlm": 1.0, "sp": 0.5})
    model = build_model(cfg).eval()
    src, seg = _inputs(batch=4)
    labels = torch.full_like(src, -100)
    labels[:, 3] = src[:, 3]
    out = model({"src": src, "seg": seg, "tgt_mlm": labels, "tgt_sp": torch.tensor([0, 1, 0, 1])})
    torch.testing.assert_close(out["loss"], out["mlm_loss"] + 0.5 * out["sp_loss"])
    assert out["mlm_count"] == 4 and out["sp_count"] == 4


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpu_dropout_keeps_1_minus_p_of_the_elements_scaled_and_its_gradient_follows_the_mask(dtype):
    x = torch.ones(64, 128, 33, dtype=dtype, requires_grad=True)  # an odd size: the last 64-bit draw is cut
    torch.manual_seed(3)
    y = dropout(x, 0.1, training=True)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.9) < 0.005  # 270k elements: 0.0006 is one standard deviation
    assert torch.allclose(y[kept].float(), torch.full((int(kept.sum()),), 1 / 0.9), rtol=1e-2)
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(x * mask / 0.9)/dx = mask / 0.9
    torch.manual_seed(3)
    assert torch.equal(dropout(x, 0.1, training=True), y)  # torch's seeded generator: reproducible
    assert dropout(x, 0.1, training=False) is x and dropout(x, 0.0, training=True) is x


@pytest.mark.parametrize("mask_kind", ["none", "bool", "additive"])
def test_attention_written_out_is_sdpa(mask_kind):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 10, 8, generator=g) for _ in range(3))
    allowed = torch.ones(2, 1, 10, 10, dtype=torch.bool)
    allowed[0, ..., 7:] = False  # the first row's last three keys are padding
    mask = {"none": None, "bool": allowed, "additive": torch.zeros(2, 4, 10, 10).masked_fill(~allowed, -1e4)}[mask_kind]
    for scale in (None, 1.0):
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        torch.manual_seed(0)  # with dropout 1e-9 no element is dropped: the written-out arithmetic is compared
        assert torch.allclose(attention(q, k, v, mask, 1e-9, scale), expected, atol=1e-5)


@pytest.mark.parametrize("encoder", ALL_ENCODERS, ids=lambda e: e["name"] + "-" + e.get("mask", ""))
def test_a_rows_states_do_not_depend_on_the_padding_after_it(encoder):
    """A sentence gets the same states (so the same tags) whatever the longest row of its batch: a bidirectional RNN
    reads each row backwards from its own last token, not from the batch's padding."""
    model = _backbone(encoder)
    src, seg = _inputs(seq=8)
    padded_src, padded_seg = F.pad(src, (0, 5)), F.pad(seg, (0, 5))  # five [PAD]s (id 0), segment 0
    torch.testing.assert_close(model.encode(padded_src, padded_seg)[:, :8], model.encode(src, seg))


@pytest.mark.parametrize("rnn_class", [nn.LSTM, nn.GRU, nn.RNN])
def test_bidirectional_rnn_gives_the_states_of_packed_sequences(rnn_class):
    torch.manual_seed(0)
    rnn = rnn_class(6, 5, num_layers=2, batch_first=True, bidirectional=True)
    x, lengths = torch.randn(4, 9, 6), torch.tensor([9, 3, 7, 1])
    seg = (torch.arange(9)[None] < lengths[:, None]).long()
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    expected = nn.utils.rnn.pad_packed_sequence(rnn(packed)[0], batch_first=True, total_length=9)[0]
    torch.testing.assert_close(rnn_states(rnn, x, seg) * seg[..., None], expected)
    assert torch.equal(rnn_states(rnn, x, torch.ones_like(seg)), rnn(x)[0])  # no padding: the module itself

"""Building blocks shared by embeddings, encoders and targets: layer norms, attention, feed-forward, a Transformer layer."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class UerLayerNorm(nn.Module):
    """UER-py's layer norm: (x - mean) / (unbiased std + eps), parameters named gamma/beta."""

    def __init__(self, size: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(size))
        self.beta = nn.Parameter(torch.zeros(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True)
        return self.gamma * (x - mean) / (std + self.eps) + self.beta


class RMSNorm(nn.Module):
    """T5's layer norm: no mean subtraction, no bias."""

    def __init__(self, size: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + self.eps)).type_as(x)


def default_layernorm_eps(kind: str) -> float:
    """BERT's 1e-12 for the standard layer norm; UER-py's and T5's norms use 1e-6."""
    return 1e-12 if kind == "standard" else 1e-6


def make_layernorm(kind: str, size: int) -> nn.Module:
    if kind == "uer":
        return UerLayerNorm(size)
    if kind == "t5":
        return RMSNorm(size)
    return nn.LayerNorm(size, eps=default_layernorm_eps(kind))


def gelu_fast(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


ACTIVATIONS = {"gelu": F.gelu, "gelu_fast": gelu_fast, "relu": F.relu, "silu": F.silu}


def activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation '{name}'; known: {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name]


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout``, with a cheaper mask on the CPU. torch's CPU ``bernoulli_`` draws a random number an element: a
    fifth of a BERT-mini bf16 training step on 2 cores. Here one 64-bit draw from torch's (seeded) generator gives
    four 16-bit lanes, an element kept where its lane is at or above p's quantile (p exact to 1/65,536)."""
    if not training or p == 0.0 or x.device.type != "cpu":
        return F.dropout(x, p, training)
    words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64).random_(-(1 << 63), (1 << 63) - 1)
    lanes = words.view(torch.int16)[: x.numel()].view(x.shape)
    keep = (lanes >= round(p * 65536) - 32768).to(x.dtype).mul_(1.0 / (1.0 - p))
    return x * keep


class Dropout(nn.Dropout):
    """``nn.Dropout`` through ``dropout`` above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, p: float,
              scale: float | None) -> torch.Tensor:
    """``F.scaled_dot_product_attention``; on the CPU with dropout, whose fused kernels do not drop (its fallback
    draws with ``bernoulli_``), the same arithmetic written out with ``dropout``: softmax in float32, as the fallback."""
    if p == 0.0 or q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, scale=scale)
    scores = (q @ k.transpose(-2, -1)).float() * (math.sqrt(1.0 / q.shape[-1]) if scale is None else scale)
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min) if mask.dtype == torch.bool else scores + mask
    return dropout(scores.softmax(-1), p, True).to(v.dtype) @ v


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention over ``heads_num`` heads (``head_size`` each; default hidden / heads).

    ``scale=False`` drops the 1/sqrt(head_size) factor (T5's ``remove_attention_scale``).
    """

    def __init__(
        self,
        hidden_size: int,
        heads_num: int,
        dropout: float,
        bias: bool = True,
        head_size: int | None = None,
        scale: bool = True,
    ):
        super().__init__()
        self.heads_num = heads_num
        self.head_size = head_size or hidden_size // heads_num
        inner = self.heads_num * self.head_size
        self.query = nn.Linear(hidden_size, inner, bias=bias)
        self.key = nn.Linear(hidden_size, inner, bias=bias)
        self.value = nn.Linear(hidden_size, inner, bias=bias)
        self.output = nn.Linear(inner, hidden_size, bias=bias)
        self.dropout = dropout
        self.scale = None if scale else 1.0

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        return x.view(batch, seq, self.heads_num, self.head_size).transpose(1, 2)

    def forward(self, query: torch.Tensor, key_value: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``mask`` broadcastable to (batch, heads, q_len, kv_len): boolean (True = may attend) or an additive float
        bias (relative positions, with -inf-like values where attention is forbidden)."""
        q, k, v = self._split(self.query(query)), self._split(self.key(key_value)), self._split(self.value(key_value))
        out = attention(q, k, v, mask, self.dropout if self.training else 0.0, self.scale)
        batch, _, seq, _ = out.shape
        return self.output(out.transpose(1, 2).reshape(batch, seq, -1))


class FeedForward(nn.Module):
    def __init__(self, hidden_size: int, feedforward_size: int, act: str, bias: bool = True):
        super().__init__()
        self.linear_1 = nn.Linear(hidden_size, feedforward_size, bias=bias)
        self.linear_2 = nn.Linear(feedforward_size, hidden_size, bias=bias)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class GatedFeedForward(nn.Module):
    """GLU-variant feed-forward (T5 v1.1, LLaMA): linear_2(act(linear_gate(x)) * linear_1(x)); UER-py's names."""

    def __init__(self, hidden_size: int, feedforward_size: int, act: str, bias: bool = True):
        super().__init__()
        self.linear_gate = nn.Linear(hidden_size, feedforward_size, bias=bias)
        self.linear_1 = nn.Linear(hidden_size, feedforward_size, bias=bias)
        self.linear_2 = nn.Linear(feedforward_size, hidden_size, bias=bias)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_gate(x)) * self.linear_1(x))


def make_feedforward(kind: str, hidden_size: int, feedforward_size: int, act: str, bias: bool = True) -> nn.Module:
    cls = GatedFeedForward if kind == "gated" else FeedForward
    return cls(hidden_size, feedforward_size, act, bias)


class TransformerLayer(nn.Module):
    """Self-attention + feed-forward with residuals; ``pre_norm`` switches BERT's post-LN to GPT-2's pre-LN.

    With ``cross_attention`` (a decoder layer) a second attention over the encoder's states sits between the two,
    named ``context_attn`` with its norm ``layer_norm_3`` (UER-py's decoder names).
    """

    def __init__(
        self,
        hidden_size: int,
        heads_num: int,
        feedforward_size: int,
        act: str,
        dropout: float,
        layernorm: str,
        pre_norm: bool,
        feed_forward: str = "dense",
        bias: bool = True,
        head_size: int | None = None,
        scale: bool = True,
        cross_attention: bool = False,
    ):
        super().__init__()
        self.pre_norm = pre_norm
        self.self_attn = MultiHeadAttention(hidden_size, heads_num, dropout, bias, head_size, scale)
        self.feed_forward = make_feedforward(feed_forward, hidden_size, feedforward_size, act, bias)
        self.layer_norm_1 = make_layernorm(layernorm, hidden_size)
        self.layer_norm_2 = make_layernorm(layernorm, hidden_size)
        if cross_attention:
            self.context_attn = MultiHeadAttention(hidden_size, heads_num, dropout, bias, head_size, scale)
            self.layer_norm_3 = make_layernorm(layernorm, hidden_size)
        self.dropout = Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        cross = memory is not None
        if self.pre_norm:
            h = self.layer_norm_1(x)
            x = x + self.dropout(self.self_attn(h, h, mask))
            if cross:
                x = x + self.dropout(self.context_attn(self.layer_norm_3(x), memory, memory_mask))
            return x + self.dropout(self.feed_forward(self.layer_norm_2(x)))
        x = self.layer_norm_1(x + self.dropout(self.self_attn(x, x, mask)))
        if cross:
            x = self.layer_norm_3(x + self.dropout(self.context_attn(x, memory, memory_mask)))
        return self.layer_norm_2(x + self.dropout(self.feed_forward(x)))


class RelativePositionBias(nn.Module):
    """T5's relative position bias: a learned scalar per (bucket, head), buckets exact for near offsets and
    logarithmic up to ``max_distance``; bidirectional buckets for an encoder, one-sided for a causal decoder.
    Names follow UER-py (``relative_attention_bias``)."""

    def __init__(self, heads_num: int, bidirectional: bool, buckets_num: int = 32, max_distance: int = 128):
        super().__init__()
        self.bidirectional = bidirectional
        self.buckets_num = buckets_num
        self.max_distance = max_distance
        self.relative_attention_bias = nn.Embedding(buckets_num, heads_num)

    def bucket(self, relative: torch.Tensor) -> torch.Tensor:
        """``relative`` = key position - query position -> bucket ids."""
        buckets = self.buckets_num
        out = torch.zeros_like(relative)
        if self.bidirectional:
            buckets //= 2
            out = out + (relative > 0).long() * buckets
            relative = relative.abs()
        else:
            relative = -torch.clamp(relative, max=0)
        max_exact = buckets // 2
        is_small = relative < max_exact
        large = max_exact + (
            torch.log(relative.float().clamp(min=1) / max_exact)
            / math.log(self.max_distance / max_exact)
            * (buckets - max_exact)
        ).long()
        large = torch.clamp(large, max=buckets - 1)
        return out + torch.where(is_small, relative, large)

    def forward(self, q_len: int, k_len: int, device=None) -> torch.Tensor:
        """(1, heads, q_len, k_len) additive bias."""
        query = torch.arange(q_len, device=device)[:, None]
        key = torch.arange(k_len, device=device)[None, :]
        bias = self.relative_attention_bias(self.bucket(key - query))  # (q, k, heads)
        return bias.permute(2, 0, 1).unsqueeze(0)


def additive_mask(allowed: torch.Tensor, bias: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask (True = may attend) + a float bias -> one additive float mask for SDPA."""
    bias = bias.to(dtype)
    return torch.where(allowed, bias, torch.tensor(torch.finfo(dtype).min, dtype=dtype, device=bias.device))

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


def make_layernorm(kind: str, size: int) -> nn.Module:
    if kind == "uer":
        return UerLayerNorm(size)
    if kind == "t5":
        return RMSNorm(size)
    return nn.LayerNorm(size, eps=1e-12 if kind == "standard" else 1e-6)


def gelu_fast(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


ACTIVATIONS = {"gelu": F.gelu, "gelu_fast": gelu_fast, "relu": F.relu, "silu": F.silu}


def activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation '{name}'; known: {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name]


class MultiHeadAttention(nn.Module):
    def __init__(self, hidden_size: int, heads_num: int, dropout: float, bias: bool = True):
        super().__init__()
        self.heads_num = heads_num
        self.head_size = hidden_size // heads_num
        self.query = nn.Linear(hidden_size, hidden_size, bias=bias)
        self.key = nn.Linear(hidden_size, hidden_size, bias=bias)
        self.value = nn.Linear(hidden_size, hidden_size, bias=bias)
        self.output = nn.Linear(hidden_size, hidden_size, bias=bias)
        self.dropout = dropout

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        return x.view(batch, seq, self.heads_num, self.head_size).transpose(1, 2)

    def forward(self, query: torch.Tensor, key_value: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``mask``: boolean, broadcastable to (batch, heads, q_len, kv_len); True = may attend."""
        q, k, v = self._split(self.query(query)), self._split(self.key(key_value)), self._split(self.value(key_value))
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
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


class TransformerLayer(nn.Module):
    """Self-attention + feed-forward with residuals; ``pre_norm`` switches BERT's post-LN to GPT-2's pre-LN."""

    def __init__(
        self,
        hidden_size: int,
        heads_num: int,
        feedforward_size: int,
        act: str,
        dropout: float,
        layernorm: str,
        pre_norm: bool,
    ):
        super().__init__()
        self.pre_norm = pre_norm
        self.self_attn = MultiHeadAttention(hidden_size, heads_num, dropout)
        self.feed_forward = FeedForward(hidden_size, feedforward_size, act)
        self.layer_norm_1 = make_layernorm(layernorm, hidden_size)
        self.layer_norm_2 = make_layernorm(layernorm, hidden_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.pre_norm:
            h = self.layer_norm_1(x)
            x = x + self.dropout(self.self_attn(h, h, mask))
            return x + self.dropout(self.feed_forward(self.layer_norm_2(x)))
        x = self.layer_norm_1(x + self.dropout(self.self_attn(x, x, mask)))
        return self.layer_norm_2(x + self.dropout(self.feed_forward(x)))

"""Encoders: (batch, seq, emb) embeddings + segment ids -> (batch, seq, hidden) states.

``transformer`` (BERT / GPT-2 / ALBERT / T5 options), the RNN family (``rnn``, ``lstm``, ``gru`` and their
bidirectional ``bi*`` forms, each direction hidden_size / 2 wide), ``cnn`` and ``gatedcnn`` (Dauphin et al. 2017).
RNN and CNN encoders read emb_size inputs themselves (``reads_emb_size``), as in UER-py, so the embedding adds no
projection for them. ``is_causal(model_cfg)`` says whether position t sees only positions <= t (what an LM needs).
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from uer_ray.config import ComponentConfig
from uer_ray.models.layers import (
    ACTIVATIONS, Dropout, RelativePositionBias, TransformerLayer, additive_mask, dropout, make_layernorm,
)
from uer_ray.registry import ENCODERS

BIDIRECTIONAL_RNNS = ("birnn", "bilstm", "bigru")


def attention_mask(seg: torch.Tensor, causal: bool) -> torch.Tensor:
    """Boolean (batch, 1, seq, seq): True where a query may attend to a key (keys that are not padding)."""
    keys = (seg > 0)[:, None, None, :]
    if not causal:
        return keys
    seq = seg.size(1)
    return keys & torch.ones(seq, seq, dtype=torch.bool, device=seg.device).tril()[None, None]


def is_causal(model_cfg) -> bool:
    return bool(getattr(ENCODERS.get(model_cfg.encoder.name), "is_causal", lambda enc: False)(model_cfg.encoder))


@ENCODERS.register("transformer")
class TransformerEncoder(nn.Module):
    class Config(ComponentConfig):
        layers_num: int = Field(2, gt=0)
        heads_num: int = Field(2, gt=0)
        attention_head_size: int | None = Field(None, gt=0)  # None: hidden_size / heads_num (T5 3B/11B set it)
        feedforward_size: int = Field(512, gt=0)
        hidden_act: Literal[tuple(ACTIVATIONS)] = "gelu"  # type: ignore[valid-type]
        layernorm_positioning: Literal["post", "pre"] = "post"
        mask: Literal["fully_visible", "causal"] = "fully_visible"
        dropout: float = Field(0.1, ge=0, lt=1)
        feed_forward: Literal["dense", "gated"] = "dense"  # gated: GLU-style (T5 v1.1)
        parameter_sharing: bool = False  # ALBERT: one layer applied layers_num times
        remove_transformer_bias: bool = False  # T5: no biases in attention / feed-forward linears
        remove_attention_scale: bool = False  # T5: no 1/sqrt(head_size)
        relative_position_embedding: bool = False  # T5 bucketed relative position bias, shared by the layers
        relative_attention_buckets_num: int = Field(32, gt=1)

    @staticmethod
    def is_causal(enc) -> bool:
        return enc.mask == "causal"

    @staticmethod
    def check_model(model_cfg) -> None:
        enc = model_cfg.encoder
        if enc.attention_head_size is None and model_cfg.hidden_size % enc.heads_num:
            raise ValueError(f"hidden_size {model_cfg.hidden_size} is not divisible by encoder.heads_num {enc.heads_num}")

    def __init__(self, cfg):
        super().__init__()
        enc = cfg.encoder
        self.causal = enc.mask == "causal"
        self.layers_num = enc.layers_num
        pre_norm = enc.layernorm_positioning == "pre"

        def layer():
            return TransformerLayer(
                cfg.hidden_size, enc.heads_num, enc.feedforward_size, enc.hidden_act, enc.dropout, cfg.layernorm,
                pre_norm, feed_forward=enc.feed_forward, bias=not enc.remove_transformer_bias,
                head_size=enc.attention_head_size, scale=not enc.remove_attention_scale,
            )

        # Shared parameters keep the name encoder.layers.0.* (what checkpoint conversion expects for layer 0).
        self.layers = nn.ModuleList(layer() for _ in range(1 if enc.parameter_sharing else enc.layers_num))
        self.final_layer_norm = make_layernorm(cfg.layernorm, cfg.hidden_size) if pre_norm else nn.Identity()
        self.relative_pos_emb = (
            RelativePositionBias(enc.heads_num, bidirectional=not self.causal, buckets_num=enc.relative_attention_buckets_num)
            if enc.relative_position_embedding
            else None
        )

    def forward(self, emb: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        mask = attention_mask(seg, self.causal)
        if self.relative_pos_emb is not None:
            seq = emb.size(1)
            mask = additive_mask(mask, self.relative_pos_emb(seq, seq, emb.device), emb.dtype)
        hidden = emb
        for i in range(self.layers_num):
            hidden = self.layers[i % len(self.layers)](hidden, mask)
        return self.final_layer_norm(hidden)


class RnnEncoder(nn.Module):
    """UER-py's RNN encoders: emb_size inputs, ``layers_num`` stacked layers with dropout between them."""

    rnn_class: type[nn.RNNBase] = nn.RNN
    bidirectional = False
    reads_emb_size = True

    class Config(ComponentConfig):
        layers_num: int = Field(2, gt=0)
        dropout: float = Field(0.1, ge=0, lt=1)

    @classmethod
    def is_causal(cls, enc) -> bool:
        return not cls.bidirectional

    @classmethod
    def check_model(cls, model_cfg) -> None:
        if cls.bidirectional and model_cfg.hidden_size % 2:
            raise ValueError(
                f"encoder {model_cfg.encoder.name} splits hidden_size between two directions: "
                f"hidden_size {model_cfg.hidden_size} must be even"
            )

    def __init__(self, cfg):
        super().__init__()
        enc = cfg.encoder
        emb_size = cfg.emb_size or cfg.hidden_size
        size = cfg.hidden_size // 2 if self.bidirectional else cfg.hidden_size
        self.rnn = self.rnn_class(
            emb_size, size, num_layers=enc.layers_num, dropout=enc.dropout if enc.layers_num > 1 else 0.0,
            batch_first=True, bidirectional=self.bidirectional,
        )
        self.drop = Dropout(enc.dropout)

    def forward(self, emb: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        """Bidirectional: (..., :hidden/2) is the forward direction, (..., hidden/2:) the backward one."""
        return self.drop(rnn_states(self.rnn, emb, seg))


def rnn_states(rnn: nn.RNNBase, inputs: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
    """The batch-first ``rnn``'s output states; rows are left-aligned (padding, segment 0, after the tokens)."""
    if not rnn.bidirectional:
        return rnn(inputs)[0]  # a forward RNN's states at the tokens never see the padding after them
    lengths = (seg > 0).sum(1)
    if bool((lengths == inputs.size(1)).all()):
        return rnn(inputs)[0]
    return _bidirectional_states(rnn, inputs, lengths)


def reverse_rows(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each row's first ``lengths[i]`` positions in reverse order, the padding after them in place (its own inverse)."""
    positions = torch.arange(x.size(1), device=x.device).expand(x.size(0), -1)
    index = torch.where(positions < lengths[:, None], lengths[:, None] - 1 - positions, positions)
    return x.gather(1, index.unsqueeze(-1).expand_as(x))


_RNN_FUNCTIONS = {"LSTM": torch.lstm, "GRU": torch.gru, "RNN_TANH": torch.rnn_tanh, "RNN_RELU": torch.rnn_relu}


def _bidirectional_states(rnn: nn.RNNBase, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """A bidirectional ``rnn`` layer by layer, the backward direction run forwards over each row reversed: it starts
    at the row's own last token, not at the batch's last padding, so a row's states do not depend on the longest row
    of its batch (UER-py's RNNs read the padding). The results of packed sequences at the speed of the fused CPU
    kernels, which packed sequences do not use (twice as slow)."""
    for layer in range(rnn.num_layers):
        if layer:
            x = dropout(x, rnn.dropout, rnn.training)  # nn.RNNBase's dropout between layers
        forward = _one_direction(rnn, layer, "", x)
        backward = reverse_rows(_one_direction(rnn, layer, "_reverse", reverse_rows(x, lengths)), lengths)
        x = torch.cat([forward, backward], dim=-1)
    return x


def _one_direction(rnn: nn.RNNBase, layer: int, suffix: str, x: torch.Tensor) -> torch.Tensor:
    """Layer ``layer`` of ``rnn``, one direction (``suffix`` "" or "_reverse"), left to right over ``x``."""
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh") if rnn.bias else ("weight_ih", "weight_hh")
    weights = [getattr(rnn, f"{name}_l{layer}{suffix}") for name in names]
    zeros = x.new_zeros(1, x.size(0), rnn.hidden_size)
    initial = [zeros, zeros] if rnn.mode == "LSTM" else zeros
    return _RNN_FUNCTIONS[rnn.mode](x, initial, weights, rnn.bias, 1, 0.0, rnn.training, False, True)[0]


for _name, _rnn, _bi in [
    ("rnn", nn.RNN, False), ("lstm", nn.LSTM, False), ("gru", nn.GRU, False),
    ("birnn", nn.RNN, True), ("bilstm", nn.LSTM, True), ("bigru", nn.GRU, True),
]:
    ENCODERS.register(_name)(
        type(f"{_name.capitalize()}Encoder", (RnnEncoder,), {"rnn_class": _rnn, "bidirectional": _bi, "__doc__": f"``{_name}``"})
    )


class _ConvEncoder(nn.Module):
    reads_emb_size = True

    class Config(ComponentConfig):
        layers_num: int = Field(2, gt=0)
        kernel_size: int = Field(3, gt=0)
        dropout: float = Field(0.1, ge=0, lt=1)
        mask: Literal["fully_visible", "causal"] = "fully_visible"  # causal: left padding only (for LM)

    @staticmethod
    def is_causal(enc) -> bool:
        return enc.mask == "causal"

    def __init__(self, cfg):
        super().__init__()
        self.kernel_size = cfg.encoder.kernel_size
        self.causal = cfg.encoder.mask == "causal"
        self.drop = Dropout(cfg.encoder.dropout)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, channels, seq) -> padded so that a conv of kernel_size returns seq positions."""
        k = self.kernel_size - 1
        left = k if self.causal else k // 2
        return nn.functional.pad(x, (left, k - left))

    @staticmethod
    def _zero_padding(x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        return x * (seg > 0).unsqueeze(1).to(x.dtype)


@ENCODERS.register("cnn")
class CnnEncoder(_ConvEncoder):
    """Stacked 1-D convolutions with ReLU and residual connections after the first."""

    def __init__(self, cfg):
        super().__init__(cfg)
        emb_size, hidden, k = cfg.emb_size or cfg.hidden_size, cfg.hidden_size, cfg.encoder.kernel_size
        self.conv_1 = nn.Conv1d(emb_size, hidden, k)
        self.convs = nn.ModuleList(nn.Conv1d(hidden, hidden, k) for _ in range(cfg.encoder.layers_num - 1))

    def forward(self, emb: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv_1(self._pad(self._zero_padding(emb.transpose(1, 2), seg))))
        for conv in self.convs:
            x = x + self.drop(torch.relu(conv(self._pad(self._zero_padding(x, seg)))))
        return x.transpose(1, 2)


@ENCODERS.register("gatedcnn")
class GatedCnnEncoder(_ConvEncoder):
    """Gated linear units (Dauphin et al. 2017) as in UER-py: h = conv(x) * sigmoid(gate(x)); a residual connection
    every ``block_size`` layers after the first. Causal (left) padding by default: GatedCNN is an LM encoder."""

    class Config(_ConvEncoder.Config):
        kernel_size: int = Field(4, gt=0)
        block_size: int = Field(2, gt=0)
        mask: Literal["fully_visible", "causal"] = "causal"

    def __init__(self, cfg):
        super().__init__(cfg)
        emb_size, hidden, k = cfg.emb_size or cfg.hidden_size, cfg.hidden_size, cfg.encoder.kernel_size
        self.block_size = cfg.encoder.block_size
        self.conv_1 = nn.Conv1d(emb_size, hidden, k)
        self.gate_1 = nn.Conv1d(emb_size, hidden, k)
        self.conv = nn.ModuleList(nn.Conv1d(hidden, hidden, k) for _ in range(cfg.encoder.layers_num - 1))
        self.gate = nn.ModuleList(nn.Conv1d(hidden, hidden, k) for _ in range(cfg.encoder.layers_num - 1))

    def forward(self, emb: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        x = self._pad(self._zero_padding(emb.transpose(1, 2), seg))
        hidden = self.conv_1(x) * torch.sigmoid(self.gate_1(x))
        residual = hidden
        for i, (conv, gate) in enumerate(zip(self.conv, self.gate)):
            x = self._pad(self._zero_padding(hidden, seg))
            hidden = self.drop(conv(x) * torch.sigmoid(gate(x)))
            if (i + 1) % self.block_size == 0:
                hidden = hidden + residual
                residual = hidden
        return hidden.transpose(1, 2)

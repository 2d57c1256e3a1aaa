"""Encoders: (batch, seq, hidden) embeddings + segment ids -> (batch, seq, hidden) states."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from uer_ray.config import ComponentConfig
from uer_ray.models.layers import ACTIVATIONS, TransformerLayer, make_layernorm
from uer_ray.registry import ENCODERS


def attention_mask(seg: torch.Tensor, causal: bool) -> torch.Tensor:
    """Boolean (batch, 1, seq, seq): True where a query may attend to a key (keys that are not padding)."""
    keys = (seg > 0)[:, None, None, :]
    if not causal:
        return keys
    seq = seg.size(1)
    return keys & torch.ones(seq, seq, dtype=torch.bool, device=seg.device).tril()[None, None]


@ENCODERS.register("transformer")
class TransformerEncoder(nn.Module):
    class Config(ComponentConfig):
        layers_num: int = Field(2, gt=0)
        heads_num: int = Field(2, gt=0)
        feedforward_size: int = Field(512, gt=0)
        hidden_act: Literal[tuple(ACTIVATIONS)] = "gelu"  # type: ignore[valid-type]
        layernorm_positioning: Literal["post", "pre"] = "post"
        mask: Literal["fully_visible", "causal"] = "fully_visible"
        dropout: float = Field(0.1, ge=0, lt=1)

    @staticmethod
    def check_model(model_cfg) -> None:
        heads = model_cfg.encoder.heads_num
        if model_cfg.hidden_size % heads:
            raise ValueError(f"hidden_size {model_cfg.hidden_size} is not divisible by encoder.heads_num {heads}")

    def __init__(self, cfg):
        super().__init__()
        enc = cfg.encoder
        self.causal = enc.mask == "causal"
        pre_norm = enc.layernorm_positioning == "pre"
        self.layers = nn.ModuleList(
            TransformerLayer(
                cfg.hidden_size, enc.heads_num, enc.feedforward_size, enc.hidden_act, enc.dropout, cfg.layernorm, pre_norm
            )
            for _ in range(enc.layers_num)
        )
        self.final_layer_norm = make_layernorm(cfg.layernorm, cfg.hidden_size) if pre_norm else nn.Identity()

    def forward(self, emb: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        mask = attention_mask(seg, self.causal)
        hidden = emb
        for layer in self.layers:
            hidden = layer(hidden, mask)
        return self.final_layer_norm(hidden)

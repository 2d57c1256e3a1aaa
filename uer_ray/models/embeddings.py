"""Embedding parts (summed), then an optional layer norm, dropout and a projection when emb_size != hidden_size."""
from __future__ import annotations

import torch
from torch import nn

from uer_ray.models.layers import make_layernorm
from uer_ray.registry import EMBEDDINGS


@EMBEDDINGS.register("word")
class WordEmbedding(nn.Module):
    def __init__(self, cfg, emb_size: int):
        super().__init__()
        self.embedding = nn.Embedding(cfg.vocab_size, emb_size)

    def forward(self, src: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        return self.embedding(src)


@EMBEDDINGS.register("pos")
class PositionEmbedding(nn.Module):
    """Learned absolute positions."""

    def __init__(self, cfg, emb_size: int):
        super().__init__()
        self.embedding = nn.Embedding(cfg.max_seq_length, emb_size)

    def forward(self, src: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(src.size(1), device=src.device)
        return self.embedding(positions).unsqueeze(0)


@EMBEDDINGS.register("seg")
class SegmentEmbedding(nn.Module):
    """Segment ids: 0 padding, 1 first sentence, 2 second sentence (UER-py's convention)."""

    def __init__(self, cfg, emb_size: int):
        super().__init__()
        self.embedding = nn.Embedding(3, emb_size)

    def forward(self, src: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        return self.embedding(seg)


class Embedding(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        emb_size = cfg.emb_size or cfg.hidden_size
        self.parts = nn.ModuleDict({name: EMBEDDINGS.get(name)(cfg, emb_size) for name in cfg.embedding.parts})
        self.layer_norm = make_layernorm(cfg.layernorm, emb_size) if cfg.embedding.layernorm else nn.Identity()
        self.dropout = nn.Dropout(cfg.embedding.dropout)
        self.projection = nn.Linear(emb_size, cfg.hidden_size) if emb_size != cfg.hidden_size else nn.Identity()

    @property
    def word_weight(self) -> torch.Tensor | None:
        """The word embedding matrix, for output layers tied to it."""
        word = self.parts["word"] if "word" in self.parts else None
        return word.embedding.weight if word is not None else None

    def forward(self, src: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        emb = sum(part(src, seg) for part in self.parts.values())
        return self.projection(self.dropout(self.layer_norm(emb)))

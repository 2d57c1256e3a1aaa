"""Embedding parts (summed), then an optional layer norm, dropout and a projection when emb_size != hidden_size."""
from __future__ import annotations

import math

import torch
from torch import nn

from uer_ray.models.layers import Dropout, make_layernorm
from uer_ray.registry import EMBEDDINGS, ENCODERS, SUBENCODERS


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


@EMBEDDINGS.register("sinusoidalpos")
class SinusoidalPositionEmbedding(nn.Module):
    """Fixed sine/cosine positions (Vaswani et al. 2017); no parameters."""

    def __init__(self, cfg, emb_size: int):
        super().__init__()
        position = torch.arange(cfg.max_seq_length, dtype=torch.float).unsqueeze(1)
        div = torch.exp(torch.arange(0, emb_size, 2, dtype=torch.float) * (-math.log(10000.0) / emb_size))
        table = torch.zeros(cfg.max_seq_length, emb_size)
        table[:, 0::2] = torch.sin(position * div)
        table[:, 1::2] = torch.cos(position * div)[:, : emb_size // 2]
        self.register_buffer("table", table, persistent=False)

    def forward(self, src: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        return self.table[: src.size(1)].unsqueeze(0)


class Embedding(nn.Module):
    """``project``: add the emb_size -> hidden_size projection (None: unless the encoder reads emb_size itself, as
    UER-py's RNN and CNN encoders do). ``vocab``: the word vocabulary, needed only by a subencoder."""

    def __init__(self, cfg, vocab=None, project: bool | None = None):
        super().__init__()
        emb_size = cfg.emb_size or cfg.hidden_size
        self.parts = nn.ModuleDict({name: EMBEDDINGS.get(name)(cfg, emb_size) for name in cfg.embedding.parts})
        self.layer_norm = make_layernorm(cfg.layernorm, emb_size) if cfg.embedding.layernorm else nn.Identity()
        self.dropout = Dropout(cfg.embedding.dropout)
        if project is None:
            project = not getattr(ENCODERS.get(cfg.encoder.name), "reads_emb_size", False)
        self.projection = nn.Linear(emb_size, cfg.hidden_size) if project and emb_size != cfg.hidden_size else nn.Identity()
        self.subencoder = None
        sub_cfg = getattr(cfg, "subencoder", None)
        if sub_cfg is not None:
            if "word" not in self.parts:
                raise ValueError("model.subencoder combines with the word embedding: add 'word' to embedding.parts")
            self.subencoder = SUBENCODERS.get(sub_cfg.name)(sub_cfg, emb_size, vocab)

    @property
    def word_weight(self) -> torch.Tensor | None:
        """The word embedding matrix, for output layers tied to it."""
        word = self.parts["word"] if "word" in self.parts else None
        return word.embedding.weight if word is not None else None

    def forward(self, src: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        if self.subencoder is None:
            emb = sum(part(src, seg) for part in self.parts.values())
        else:
            emb = sum(
                self.subencoder.combine(part(src, seg), src) if name == "word" else part(src, seg)
                for name, part in self.parts.items()
            )
        return self.projection(self.dropout(self.layer_norm(emb)))

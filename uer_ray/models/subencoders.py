"""Subencoders (UER paper): a word's vector also learned from its characters, for word-level vocabularies.

Each token of the word vocabulary is decomposed into its characters once, when the model is built (WordPiece's
``##`` prefix dropped; special tokens are one piece each), so no extra data column is needed: the decomposition is a
(vocab_size, max_pieces) buffer saved with the weights. A CNN or an RNN runs over the pieces, ``mean``/``max`` pooling
gives one vector per word, and ``combine`` adds it to the word embedding (``sum``) or concatenates the two and
projects back to emb_size (``concat``). Only the distinct ids of a batch are encoded.

    model:
      subencoder: {name: cnn, pooling: mean, combine: sum}
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from uer_ray.config import ComponentConfig
from uer_ray.registry import SUBENCODERS

SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def decompose(tokens: list[str], max_pieces: int) -> tuple[torch.Tensor, list[str]]:
    """Word tokens -> (len(tokens), max_pieces) piece ids (0 = padding) and the piece vocabulary."""
    pieces: dict[str, int] = {"<pad>": 0}
    table = torch.zeros(len(tokens), max_pieces, dtype=torch.long)
    for i, token in enumerate(tokens):
        if token in SPECIAL or (token.startswith("[") and token.endswith("]") and len(token) > 2):
            chars = [token]
        else:
            chars = list(token[2:] if token.startswith("##") and len(token) > 2 else token) or [token]
        for j, char in enumerate(chars[:max_pieces]):
            table[i, j] = pieces.setdefault(char, len(pieces))
    return table, list(pieces)


class Subencoder(nn.Module):
    class Config(ComponentConfig):
        pooling: Literal["mean", "max"] = "mean"
        combine: Literal["sum", "concat"] = "sum"
        max_pieces: int = Field(16, gt=0)  # characters kept per word
        layers_num: int = Field(1, gt=0)
        kernel_size: int = Field(3, gt=0)  # cnn only

    def __init__(self, cfg, emb_size: int, vocab):
        super().__init__()
        if vocab is None:
            raise ValueError(
                f"subencoder '{cfg.name}' needs the word vocabulary: build the model with build_model(cfg, vocab)"
            )
        tokens = vocab.tokens if hasattr(vocab, "tokens") else list(vocab)
        table, pieces = decompose(tokens, cfg.max_pieces)
        self.cfg = cfg
        self.register_buffer("pieces", table)
        self.piece_embedding = nn.Embedding(len(pieces), emb_size, padding_idx=0)
        self.combine_layer = nn.Linear(2 * emb_size, emb_size) if cfg.combine == "concat" else None

    def encode_pieces(self, emb: torch.Tensor) -> torch.Tensor:
        """(words, pieces, emb) -> (words, pieces, emb)."""
        raise NotImplementedError

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Word ids (any shape) -> word vectors from their characters (same shape + emb)."""
        unique, inverse = torch.unique(ids, return_inverse=True)
        pieces = self.pieces[unique]  # (words, max_pieces)
        valid = (pieces > 0).unsqueeze(-1)
        states = self.encode_pieces(self.piece_embedding(pieces))
        if self.cfg.pooling == "max":
            pooled = states.masked_fill(~valid, torch.finfo(states.dtype).min).max(1).values
        else:
            pooled = (states * valid).sum(1) / valid.sum(1).clamp(min=1)
        return pooled[inverse]

    def combine(self, word: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        sub = self(ids)
        if self.combine_layer is None:
            return word + sub
        return self.combine_layer(torch.cat([word, sub], -1))


@SUBENCODERS.register("cnn")
class CnnSubencoder(Subencoder):
    """Convolutions over the characters (same padding), ReLU."""

    def __init__(self, cfg, emb_size: int, vocab):
        super().__init__(cfg, emb_size, vocab)
        self.convs = nn.ModuleList(
            nn.Conv1d(emb_size, emb_size, cfg.kernel_size, padding=cfg.kernel_size // 2) for _ in range(cfg.layers_num)
        )

    def encode_pieces(self, emb):
        x = emb.transpose(1, 2)
        length = x.size(-1)
        for conv in self.convs:
            x = torch.relu(conv(x))[..., :length]
        return x.transpose(1, 2)


class RnnSubencoder(Subencoder):
    rnn_class: type[nn.RNNBase] = nn.RNN

    def __init__(self, cfg, emb_size: int, vocab):
        super().__init__(cfg, emb_size, vocab)
        self.rnn = self.rnn_class(emb_size, emb_size, num_layers=cfg.layers_num, batch_first=True)

    def encode_pieces(self, emb):
        return self.rnn(emb)[0]


SUBENCODERS.register("rnn")(type("VanillaRnnSubencoder", (RnnSubencoder,), {"rnn_class": nn.RNN}))
SUBENCODERS.register("lstm")(type("LstmSubencoder", (RnnSubencoder,), {"rnn_class": nn.LSTM}))
SUBENCODERS.register("gru")(type("GruSubencoder", (RnnSubencoder,), {"rnn_class": nn.GRU}))

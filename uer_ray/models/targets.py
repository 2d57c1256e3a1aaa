"""Pre-training targets: hidden states + batch -> loss, and the counts behind an accuracy.

A target reads its labels from the batch under ``tgt_<name>``; label -100 means "no prediction here".
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from uer_ray.config import TargetConfig
from uer_ray.data.masking import IGNORE, mask_tokens
from uer_ray.models.layers import activation, make_layernorm
from uer_ray.registry import TARGETS

class TargetOutput(NamedTuple):
    loss: torch.Tensor
    correct: torch.Tensor  # number of right predictions
    count: torch.Tensor  # number of predictions made


def token_classification(logits: torch.Tensor, labels: torch.Tensor) -> TargetOutput:
    loss = F.cross_entropy(logits, labels, ignore_index=IGNORE)
    valid = labels != IGNORE
    correct = ((logits.argmax(-1) == labels) & valid).sum()
    return TargetOutput(loss, correct, valid.sum())


class Target(nn.Module):
    column: str  # the batch key holding this target's labels

    @classmethod
    def prepare_labels(cls, batch: dict[str, np.ndarray], table, target_cfg, vocab, rng: np.random.Generator) -> None:
        """Add this target's labels to a collated numpy batch; by default read from the Parquet column."""
        from uer_ray.data.collate import column_array

        if cls.column not in table.column_names:
            raise KeyError(f"target '{cls.registry_name}' needs column '{cls.column}', absent from the dataset")
        batch[cls.column] = column_array(table, cls.column, IGNORE)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, hidden: torch.Tensor, batch: dict[str, torch.Tensor]) -> TargetOutput:
        raise NotImplementedError


@TARGETS.register("mlm")
class MlmTarget(Target):
    """Masked language model (BERT): predicts the original token at masked positions only."""

    column = "tgt_mlm"

    class Config(TargetConfig):
        mask_prob: float = Field(0.15, gt=0, lt=1)  # used by dynamic masking on the training worker

    @classmethod
    def prepare_labels(cls, batch, table, target_cfg, vocab, rng):
        if cls.column in table.column_names:  # static masks made at preprocessing time
            return super().prepare_labels(batch, table, target_cfg, vocab, rng)
        specials = [vocab.pad_id, vocab.unk_id, vocab.cls_id, vocab.sep_id, vocab.mask_id]
        maskable = (batch["seg"] > 0) & ~np.isin(batch["src"], specials)
        batch["src"], batch[cls.column] = mask_tokens(
            batch["src"], maskable, vocab.mask_id, len(vocab), rng, target_cfg.mask_prob
        )

    def __init__(self, model_cfg, target_cfg, embedding):
        super().__init__()
        emb_size = model_cfg.emb_size or model_cfg.hidden_size
        self.linear_1 = nn.Linear(model_cfg.hidden_size, emb_size)
        self.act = activation("gelu")
        self.layer_norm = make_layernorm(model_cfg.layernorm, emb_size)
        self.linear_2 = nn.Linear(emb_size, model_cfg.vocab_size)
        if model_cfg.tie_weights and embedding.word_weight is not None:
            self.linear_2.weight = embedding.word_weight

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.layer_norm(self.act(self.linear_1(hidden))))

    def forward(self, hidden, batch):
        labels = batch[self.column]
        selected = labels != IGNORE
        # Project only the masked positions: the vocabulary projection dominates the cost.
        return token_classification(self.logits(hidden[selected]), labels[selected])


@TARGETS.register("sp")
class SentencePredictionTarget(Target):
    """Sentence-pair prediction from the first ([CLS]) position: next sentence (NSP) or sentence order (SOP)."""

    column = "tgt_sp"

    def __init__(self, model_cfg, target_cfg, embedding):
        super().__init__()
        self.linear_1 = nn.Linear(model_cfg.hidden_size, model_cfg.hidden_size)
        self.linear_2 = nn.Linear(model_cfg.hidden_size, 2)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear_2(torch.tanh(self.linear_1(hidden[:, 0])))

    def forward(self, hidden, batch):
        return token_classification(self.logits(hidden), batch[self.column])

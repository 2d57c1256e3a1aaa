"""Pre-training targets: hidden states + batch -> loss, and the counts behind an accuracy.

A target reads its labels from the batch under ``tgt_<name>``; label -100 means "no prediction here". LM-style
targets (``lm``, ``bilm``, ``ae``) derive their labels from ``src`` on the training worker (``prepare_labels``), so
their processors only write src/seg. ``seq2seq`` is a Transformer decoder over the encoder's states.
"""
from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from uer_ray.config import StrictModel, TargetConfig
from uer_ray.data.masking import IGNORE, mask_tokens
from uer_ray.models.encoders import BIDIRECTIONAL_RNNS, attention_mask, is_causal
from uer_ray.models.layers import ACTIVATIONS, RelativePositionBias, TransformerLayer, activation, additive_mask, make_layernorm
from uer_ray.registry import ENCODERS, TARGETS


class TargetOutput(NamedTuple):
    loss: torch.Tensor
    correct: torch.Tensor  # number of right predictions
    count: torch.Tensor  # number of predictions made


def token_classification(logits: torch.Tensor, labels: torch.Tensor) -> TargetOutput:
    loss = F.cross_entropy(logits, labels, ignore_index=IGNORE)
    valid = labels != IGNORE
    # max's indices, not argmax: the same first maximum, 2-4x faster on the CPU (a bf16 MLM step spent 5% in argmax)
    correct = ((logits.max(-1).indices == labels) & valid).sum()
    return TargetOutput(loss, correct, valid.sum())


class Target(nn.Module):
    column: str  # the batch key holding this target's labels

    @classmethod
    def prepare_labels(
        cls, batch: dict[str, np.ndarray], table, target_cfg, vocab, rng: np.random.Generator, data=None
    ) -> None:
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

    @classmethod
    def prepare_labels(cls, batch, table, target_cfg, vocab, rng, data=None):
        """Dynamic masking with the dataset's masking options (``data``: its processor config); one place decides
        how masks are drawn, whether at preprocessing (static) or here (dynamic)."""
        if cls.column in table.column_names:  # static masks made at preprocessing time
            return super().prepare_labels(batch, table, target_cfg, vocab, rng)
        from uer_ray.data.collate import column_array

        data = data or {}
        specials = [vocab.pad_id, vocab.unk_id, vocab.cls_id, vocab.sep_id, vocab.mask_id]
        maskable = (batch["seg"] > 0) & ~np.isin(batch["src"], specials)
        word_start = column_array(table, "word_start", 1) if "word_start" in table.column_names else None
        batch["src"], batch[cls.column] = mask_tokens(
            batch["src"], maskable, vocab.mask_id, len(vocab), rng,
            prob=data.get("mask_prob", 0.15), strategy=data.get("masking_strategy", "token"),
            word_start=word_start, span_p=data.get("span_p", 0.2), span_max=data.get("span_max", 10),
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


Pooling = Literal["first", "last", "mean", "max"]


def pool(hidden: torch.Tensor, seg: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """(batch, seq, hidden) -> (batch, hidden): the first ([CLS]) or last non-padding position, or mean / max over
    the non-padding positions (``last`` suits causal encoders, whose first position sees only itself)."""
    if pooling == "first" or seg is None:
        return hidden[:, 0]
    valid = (seg > 0).unsqueeze(-1)
    if pooling == "last":
        last = (seg > 0).sum(1).clamp(min=1) - 1
        return hidden[torch.arange(hidden.size(0), device=hidden.device), last]
    if pooling == "max":
        return hidden.masked_fill(~valid, torch.finfo(hidden.dtype).min).max(1).values
    return (hidden * valid).sum(1) / valid.sum(1).clamp(min=1)


class _Classifier(Target):
    """Two-layer head (tanh) on a pooled vector: UER-py's sp / cls targets (``linear_1``, ``linear_2``)."""

    labels_num = 2

    class Config(TargetConfig):
        pooling: Pooling = "first"

    def __init__(self, model_cfg, target_cfg, embedding):
        super().__init__()
        self.pooling = target_cfg.pooling
        self.linear_1 = nn.Linear(model_cfg.hidden_size, model_cfg.hidden_size)
        self.linear_2 = nn.Linear(model_cfg.hidden_size, getattr(target_cfg, "labels_num", self.labels_num))

    def logits(self, hidden: torch.Tensor, seg: torch.Tensor | None = None) -> torch.Tensor:
        return self.linear_2(torch.tanh(self.linear_1(pool(hidden, seg, self.pooling))))

    def forward(self, hidden, batch):
        return token_classification(self.logits(hidden, batch["seg"]), batch[self.column])


@TARGETS.register("sp")
class SentencePredictionTarget(_Classifier):
    """Sentence-pair prediction from the first ([CLS]) position: next sentence (NSP, bert processor) or, with the
    albert processor, sentence order (SOP)."""

    column = "tgt_sp"


@TARGETS.register("sop")
class SentenceOrderTarget(SentencePredictionTarget):
    """Sentence-order prediction (ALBERT): the sp head on the albert processor's ``tgt_sp`` (1 = swapped)."""


@TARGETS.register("cls")
class ClassificationTarget(_Classifier):
    """Sentence classification (the cls processor's ``tgt_cls``)."""

    column = "tgt_cls"

    class Config(_Classifier.Config):
        labels_num: int = Field(2, ge=2)


def _shift_labels(src: np.ndarray, seg: np.ndarray, direction: int) -> np.ndarray:
    """Labels for position t: src[t + direction] (both positions not padding), else IGNORE."""
    labels = np.full_like(src, IGNORE)
    if direction > 0:
        labels[:, :-1] = np.where((seg[:, 1:] > 0) & (seg[:, :-1] > 0), src[:, 1:], IGNORE)
    else:
        labels[:, 1:] = np.where((seg[:, :-1] > 0) & (seg[:, 1:] > 0), src[:, :-1], IGNORE)
    return labels


class VocabOutputConfig(TargetConfig):
    """Options of a target that predicts a token of the vocabulary at each position (lm, ae, bilm)."""

    bias: bool = False  # UER-py's has_lmtarget_bias
    # Adaptive softmax (Grave et al., 2017): ids below adaptive_cutoffs[0] are scored on every position, each later
    # band only where needed, through a projection adaptive_div_value times narrower per band. For a vocabulary
    # sorted by frequency (uer-ray's built ones are); never tied to the word embedding.
    adaptive_cutoffs: list[int] = []
    adaptive_div_value: float = Field(4.0, gt=1)

    @field_validator("adaptive_cutoffs")
    @classmethod
    def _increasing(cls, cutoffs: list[int]) -> list[int]:
        if any(c <= 0 for c in cutoffs) or cutoffs != sorted(set(cutoffs)):
            raise ValueError(f"adaptive_cutoffs must be positive and strictly increasing, got {cutoffs}")
        return cutoffs


def _check_cutoffs(model_cfg, target_cfg, name: str) -> None:
    cutoffs = target_cfg.adaptive_cutoffs
    if cutoffs and model_cfg.vocab_size is not None and cutoffs[-1] >= model_cfg.vocab_size:
        raise ValueError(
            f"target {name}: adaptive_cutoffs {cutoffs} must stay below the vocabulary size ({model_cfg.vocab_size})"
        )


def _tied_output(model_cfg, embedding, vocab_size: int, bias: bool) -> nn.Linear:
    layer = nn.Linear(model_cfg.hidden_size, vocab_size, bias=bias)
    if model_cfg.tie_weights and embedding.word_weight is not None and embedding.word_weight.shape == layer.weight.shape:
        layer.weight = embedding.word_weight
    return layer


def _check_vocab_output(model_cfg, target_cfg, name: str) -> None:
    _check_cutoffs(model_cfg, target_cfg, name)
    emb_size = model_cfg.emb_size or model_cfg.hidden_size
    if model_cfg.tie_weights and emb_size != model_cfg.hidden_size and not target_cfg.adaptive_cutoffs:
        raise ValueError(
            f"target {name} ties its output layer to the word embedding, which needs emb_size ({emb_size}) == "
            f"hidden_size ({model_cfg.hidden_size}); set model.tie_weights: false"
        )


class AdaptiveSoftmax(nn.Module):
    """The vocabulary output as torch's ``AdaptiveLogSoftmaxWithLoss``; computed in float32 (torch's module mixes
    dtypes under autocast), so ``forward`` gives log-probabilities where a plain output layer gives logits."""

    def __init__(self, in_features: int, vocab_size: int, target_cfg: VocabOutputConfig):
        super().__init__()
        self.softmax = nn.AdaptiveLogSoftmaxWithLoss(
            in_features, vocab_size, target_cfg.adaptive_cutoffs, target_cfg.adaptive_div_value,
            head_bias=target_cfg.bias,
        )

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        with torch.autocast(hidden.device.type, enabled=False):
            flat = hidden.float().reshape(-1, hidden.size(-1))
            return self.softmax.log_prob(flat).reshape(*hidden.shape[:-1], -1)

    def classify(self, hidden: torch.Tensor, labels: torch.Tensor) -> TargetOutput:
        with torch.autocast(hidden.device.type, enabled=False):
            hidden = hidden.float()
            loss = self.softmax(hidden, labels).loss
            with torch.no_grad():
                correct = (self.softmax.predict(hidden) == labels).sum()
        return TargetOutput(loss, correct, torch.tensor(labels.numel(), device=labels.device))


def _vocab_output(model_cfg, target_cfg: VocabOutputConfig, embedding, in_features: int) -> nn.Module:
    if target_cfg.adaptive_cutoffs:
        return AdaptiveSoftmax(in_features, model_cfg.vocab_size, target_cfg)
    if embedding is None:
        return nn.Linear(in_features, model_cfg.vocab_size, bias=target_cfg.bias)
    return _tied_output(model_cfg, embedding, model_cfg.vocab_size, target_cfg.bias)


def _predict_selected(output: nn.Module, hidden: torch.Tensor, labels: torch.Tensor) -> TargetOutput:
    selected = labels != IGNORE
    if isinstance(output, AdaptiveSoftmax):  # scores only the bands the labels need
        return output.classify(hidden[selected], labels[selected])
    return token_classification(output(hidden[selected]), labels[selected])


@TARGETS.register("lm")
class LmTarget(Target):
    """Causal language model: position t predicts src[t + 1]; labels derived from src (``output_layer``, tied to
    the word embedding when tie_weights, or an adaptive softmax). Needs a causal encoder."""

    column = "tgt_lm"

    Config = VocabOutputConfig

    @staticmethod
    def check_model(model_cfg, target_cfg) -> None:
        if not is_causal(model_cfg):
            raise ValueError(
                f"target lm needs a causal encoder (transformer or cnn/gatedcnn with mask: causal, or rnn/lstm/gru); "
                f"encoder {model_cfg.encoder.name} lets a position see the tokens it predicts"
            )
        _check_vocab_output(model_cfg, target_cfg, "lm")

    @classmethod
    def prepare_labels(cls, batch, table, target_cfg, vocab, rng, data=None):
        batch[cls.column] = _shift_labels(batch["src"], batch["seg"], +1)

    def __init__(self, model_cfg, target_cfg, embedding):
        super().__init__()
        self.output_layer = _vocab_output(model_cfg, target_cfg, embedding, model_cfg.hidden_size)

    def logits(self, hidden):
        return self.output_layer(hidden)

    def forward(self, hidden, batch):
        return _predict_selected(self.output_layer, hidden, batch[self.column])


@TARGETS.register("ae")
class AeTarget(LmTarget):
    """Autoencoder: every non-padding position reconstructs its own input token."""

    column = "tgt_ae"

    @staticmethod
    def check_model(model_cfg, target_cfg) -> None:
        _check_vocab_output(model_cfg, target_cfg, "ae")

    @classmethod
    def prepare_labels(cls, batch, table, target_cfg, vocab, rng, data=None):
        batch[cls.column] = np.where(batch["seg"] > 0, batch["src"], IGNORE)


@TARGETS.register("bilm")
class BilmTarget(Target):
    """ELMo's bidirectional LM: the forward half of a bidirectional RNN's states predicts the next token
    (``output_layer_1``), the backward half the previous one (``output_layer_2``); the loss is their mean."""

    column = "tgt_bilm"  # forward labels; the backward ones are under tgt_bilm_backward
    backward_column = "tgt_bilm_backward"

    Config = VocabOutputConfig

    @staticmethod
    def check_model(model_cfg, target_cfg) -> None:
        if model_cfg.encoder.name not in BIDIRECTIONAL_RNNS:
            raise ValueError(
                f"target bilm needs a bidirectional RNN encoder ({', '.join(BIDIRECTIONAL_RNNS)}), "
                f"not {model_cfg.encoder.name}"
            )
        _check_cutoffs(model_cfg, target_cfg, "bilm")

    @classmethod
    def prepare_labels(cls, batch, table, target_cfg, vocab, rng, data=None):
        batch[cls.column] = _shift_labels(batch["src"], batch["seg"], +1)
        batch[cls.backward_column] = _shift_labels(batch["src"], batch["seg"], -1)

    def __init__(self, model_cfg, target_cfg, embedding):
        super().__init__()
        half = model_cfg.hidden_size // 2
        self.output_layer_1 = _vocab_output(model_cfg, target_cfg, None, half)
        self.output_layer_2 = _vocab_output(model_cfg, target_cfg, None, half)

    def logits(self, hidden):
        half = hidden.size(-1) // 2
        return self.output_layer_1(hidden[..., :half]), self.output_layer_2(hidden[..., half:])

    def forward(self, hidden, batch):
        half = hidden.size(-1) // 2
        fwd = _predict_selected(self.output_layer_1, hidden[..., :half], batch[self.column])
        bwd = _predict_selected(self.output_layer_2, hidden[..., half:], batch[self.backward_column])
        return TargetOutput((fwd.loss + bwd.loss) / 2, fwd.correct + bwd.correct, fwd.count + bwd.count)


_DECODER_DEFAULTS = {  # when neither the decoder nor a transformer encoder sets them
    "heads_num": 2, "attention_head_size": None, "feedforward_size": 512, "hidden_act": "gelu",
    "layernorm_positioning": "post", "feed_forward": "dense", "remove_transformer_bias": False,
    "remove_attention_scale": False, "relative_position_embedding": False, "dropout": 0.1,
}


class DecoderConfig(StrictModel):
    """The seq2seq target's Transformer decoder; options left None take the (transformer) encoder's value."""

    layers_num: int = Field(gt=0)
    heads_num: int | None = Field(None, gt=0)
    attention_head_size: int | None = Field(None, gt=0)
    feedforward_size: int | None = Field(None, gt=0)
    hidden_act: Literal[tuple(ACTIVATIONS)] | None = None  # type: ignore[valid-type]
    layernorm_positioning: Literal["post", "pre"] | None = None
    feed_forward: Literal["dense", "gated"] | None = None
    remove_transformer_bias: bool | None = None
    remove_attention_scale: bool | None = None
    relative_position_embedding: bool | None = None
    dropout: float | None = Field(None, ge=0, lt=1)

    def resolved(self, encoder_cfg) -> dict:
        out = {"layers_num": self.layers_num}
        for key, default in _DECODER_DEFAULTS.items():
            value = getattr(self, key)
            out[key] = value if value is not None else getattr(encoder_cfg, key, default)
        return out


@TARGETS.register("seq2seq")
class Seq2seqTarget(Target):
    """Sequence to sequence (Transformer NMT, T5, BART): a causal Transformer decoder with its own target embedding
    and cross-attention over the encoder's states. ``tgt_seq2seq`` = [CLS] y [SEP]: the decoder reads y[:-1] and
    predicts y[1:]."""

    column = "tgt_seq2seq"
    input_column = "tgt_seq2seq_in"

    class Config(TargetConfig):
        decoder: DecoderConfig | None = None
        tgt_embedding: list[str] = ["word", "pos"]
        share_embedding: bool = False  # the target side uses the source word embedding (T5, BART)
        tgt_vocab_size: int | None = Field(None, gt=0)  # None: model.vocab_size (one shared vocabulary)
        output_bias: bool = False  # UER-py's has_lmtarget_bias (BART)

    @staticmethod
    def check_model(model_cfg, target_cfg) -> None:
        if target_cfg.decoder is None:
            raise ValueError(
                "target seq2seq needs a decoder config: model.targets.seq2seq.decoder, e.g. {layers_num: 2}"
            )
        from uer_ray.registry import EMBEDDINGS

        for part in target_cfg.tgt_embedding:
            EMBEDDINGS.get(part)
        dec = target_cfg.decoder.resolved(model_cfg.encoder)
        if dec["attention_head_size"] is None and model_cfg.hidden_size % dec["heads_num"]:
            raise ValueError(f"hidden_size {model_cfg.hidden_size} is not divisible by decoder heads_num {dec['heads_num']}")
        tgt_vocab = target_cfg.tgt_vocab_size or model_cfg.vocab_size
        if target_cfg.share_embedding and tgt_vocab != model_cfg.vocab_size:
            raise ValueError("seq2seq share_embedding needs tgt_vocab_size == vocab_size")

    @classmethod
    def prepare_labels(cls, batch, table, target_cfg, vocab, rng, data=None):
        from uer_ray.data.collate import column_array

        if cls.column not in table.column_names:
            raise KeyError(f"target 'seq2seq' needs column '{cls.column}', absent from the dataset")
        tgt = column_array(table, cls.column, IGNORE)
        labels = tgt[:, 1:].copy()
        # The decoder reads y[:-1]: the final [SEP] of a shorter row is input to nothing, so it becomes padding too.
        batch[cls.input_column] = np.where(labels == IGNORE, vocab.pad_id, tgt[:, :-1])
        batch[cls.column] = labels

    def __init__(self, model_cfg, target_cfg, embedding):
        super().__init__()
        from uer_ray.config import EmbeddingConfig
        from uer_ray.models.embeddings import Embedding

        dec = target_cfg.decoder.resolved(model_cfg.encoder)
        tgt_vocab = target_cfg.tgt_vocab_size or model_cfg.vocab_size
        tgt_cfg = model_cfg.model_copy(update={
            "vocab_size": tgt_vocab,
            "subencoder": None,
            "embedding": EmbeddingConfig(
                parts=target_cfg.tgt_embedding, layernorm=model_cfg.embedding.layernorm, dropout=model_cfg.embedding.dropout
            ),
        })
        self.tgt_embedding = Embedding(tgt_cfg, project=True)
        if target_cfg.share_embedding and "word" in self.tgt_embedding.parts and embedding.word_weight is not None:
            self.tgt_embedding.parts["word"] = embedding.parts["word"]
        pre_norm = dec["layernorm_positioning"] == "pre"
        self.layers = nn.ModuleList(
            TransformerLayer(
                model_cfg.hidden_size, dec["heads_num"], dec["feedforward_size"], dec["hidden_act"], dec["dropout"],
                model_cfg.layernorm, pre_norm, feed_forward=dec["feed_forward"], bias=not dec["remove_transformer_bias"],
                head_size=dec["attention_head_size"], scale=not dec["remove_attention_scale"], cross_attention=True,
            )
            for _ in range(dec["layers_num"])
        )
        self.final_layer_norm = make_layernorm(model_cfg.layernorm, model_cfg.hidden_size) if pre_norm else nn.Identity()
        self.relative_pos_emb = (
            RelativePositionBias(dec["heads_num"], bidirectional=False) if dec["relative_position_embedding"] else None
        )
        self.output_layer = _tied_output(tgt_cfg, self.tgt_embedding, tgt_vocab, target_cfg.output_bias)

    def decode(self, memory: torch.Tensor, src_seg: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Encoder states (batch, src_len, hidden) + decoder input ids (batch, tgt_len) -> decoder states."""
        tgt_seg = torch.ones_like(tgt_in)
        hidden = self.tgt_embedding(tgt_in, tgt_seg)
        mask = attention_mask(tgt_seg, causal=True)
        if self.relative_pos_emb is not None:
            length = tgt_in.size(1)
            mask = additive_mask(mask, self.relative_pos_emb(length, length, hidden.device), hidden.dtype)
        memory_mask = (src_seg > 0)[:, None, None, :]
        for layer in self.layers:
            hidden = layer(hidden, mask, memory, memory_mask)
        return self.final_layer_norm(hidden)

    def logits(self, hidden, batch):
        return self.output_layer(self.decode(hidden, batch["seg"], batch[self.input_column]))

    def forward(self, hidden, batch):
        states = self.decode(hidden, batch["seg"], batch[self.input_column])
        return _predict_selected(self.output_layer, states, batch[self.column])

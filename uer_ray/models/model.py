"""A UER model: embedding -> encoder -> {target: weight}; the loss is the weighted sum of the targets' losses."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from uer_ray.models.embeddings import Embedding
from uer_ray.registry import ENCODERS, TARGETS


def set_layernorm_eps(module: nn.Module, eps: float | None) -> None:
    """``model.layernorm_eps``: overrides the epsilon of every layer norm under ``module`` (None: keep defaults)."""
    if eps is None:
        return
    for sub in module.modules():
        if isinstance(sub, nn.LayerNorm) or type(sub).__name__ in ("UerLayerNorm", "RMSNorm"):
            sub.eps = eps


def init_weights(module: nn.Module) -> None:
    """BERT's initialisation (normal, std 0.02): PyTorch's N(0, 1) embeddings give huge tied-output logits."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


class Backbone(nn.Module):
    """Embedding + encoder: what pre-training and fine-tuning share (weights named ``embedding.*``, ``encoder.*``)."""

    def __init__(self, cfg, vocab=None):
        super().__init__()
        if cfg.vocab_size is None:
            raise ValueError("model.vocab_size is not set: build the model from a job config with a tokenizer")
        self.config = cfg
        self.embedding = Embedding(cfg, vocab)  # the vocabulary is needed only by a subencoder
        self.encoder = ENCODERS.get(cfg.encoder.name)(cfg)
        set_layernorm_eps(self, getattr(cfg, "layernorm_eps", None))

    def encode(self, src: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        """Token ids and segment ids (batch, seq) -> hidden states (batch, seq, hidden)."""
        return self.encoder(self.embedding(src, seg), seg)


class UERModel(Backbone):
    def __init__(self, cfg, vocab=None):
        super().__init__(cfg, vocab)
        self.targets = nn.ModuleDict(
            {name: TARGETS.get(name)(cfg, target_cfg, self.embedding) for name, target_cfg in cfg.targets.items()}
        )
        self.weights = {name: target_cfg.weight for name, target_cfg in cfg.targets.items()}
        self.apply(init_weights)
        set_layernorm_eps(self, getattr(cfg, "layernorm_eps", None))

    def target_logits(self, name: str, hidden: torch.Tensor) -> torch.Tensor:
        return self.targets[name].logits(hidden)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Returns ``loss`` (weighted sum) and, per target, ``<name>_loss``, ``<name>_correct``, ``<name>_count``."""
        hidden = self.encode(batch["src"], batch["seg"])
        out: dict[str, torch.Tensor] = {}
        total = hidden.new_zeros(())
        for name, target in self.targets.items():
            result = target(hidden, batch)
            total = total + self.weights[name] * result.loss
            out[f"{name}_loss"] = result.loss.detach()
            out[f"{name}_correct"] = result.correct.detach()
            out[f"{name}_count"] = result.count.detach()
        out["loss"] = total
        return out


def build_model(cfg, vocab=None) -> UERModel:
    """``vocab`` (a ``Vocab``): required when ``cfg.subencoder`` is set, which decomposes the words into characters."""
    return UERModel(cfg, vocab)


def load_model(checkpoint: str | Path) -> UERModel:
    """A pre-trained model from a uer-ray checkpoint directory (local or in storage), in eval mode."""
    from uer_ray import storage
    from uer_ray.config import ModelConfig
    from uer_ray.train.checkpoint import VOCAB, load_config, load_weights

    checkpoint = storage.resolve_published(str(checkpoint))
    cfg = ModelConfig.model_validate(load_config(checkpoint)["model"])
    vocab = None
    if cfg.subencoder is not None:  # the subencoder decomposes the checkpoint's own vocabulary
        from uer_ray.tokenizers import Vocab

        vocab = Vocab.load(storage.local_path(storage.join(checkpoint, VOCAB)))
    model = UERModel(cfg, vocab)
    load_weights(checkpoint, model)
    return model.eval()

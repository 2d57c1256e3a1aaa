"""Building a model in a few lines, without a YAML job spec (as the UER paper shows)::

    from uer_ray import embedding, encoder, targets, assemble

    emb = embedding("word", "pos", "seg")
    enc = encoder("transformer", layers_num=12, heads_num=12, feedforward_size=3072)
    tgt = targets(mlm=1.0, sp=1.0)
    model = assemble(emb, enc, tgt, vocab_size=21128, hidden_size=768)

Each call validates its options at once (an unknown encoder or option fails with the known names).
"""
from __future__ import annotations

from typing import Any


def embedding(*parts: str, layernorm: bool = True, dropout: float = 0.1):
    """Embedding parts summed, e.g. ``embedding("word", "pos", "seg")``; ``layernorm=False`` as GPT-2."""
    from uer_ray.config import EmbeddingConfig

    return EmbeddingConfig(parts=list(parts or ("word", "pos", "seg")), layernorm=layernorm, dropout=dropout)


def encoder(name: str = "transformer", **options: Any):
    """A registered encoder and its options, e.g. ``encoder("transformer", layers_num=2, mask="causal")``."""
    from uer_ray.config import ComponentConfig
    from uer_ray.registry import ENCODERS

    return getattr(ENCODERS.get(name), "Config", ComponentConfig).model_validate({**options, "name": name})


def targets(**weights: float | dict) -> dict:
    """Targets and their loss weights, e.g. ``targets(mlm=1.0, sp=1.0)``; a dict value carries target options."""
    from uer_ray.config import _targets_validator

    return _targets_validator(dict(weights))


def model_config(embedding=None, encoder=None, targets=None, **model_options: Any):
    """The validated ``ModelConfig`` (``vocab_size``, ``hidden_size``, ``layernorm``, ... as keyword options)."""
    from uer_ray.config import ModelConfig

    data: dict[str, Any] = dict(model_options)
    for key, value in (("embedding", embedding), ("encoder", encoder), ("targets", targets)):
        if value is not None:
            data[key] = value.model_dump() if hasattr(value, "model_dump") else value
    if "targets" in data:
        data["targets"] = {
            name: (t.model_dump() if hasattr(t, "model_dump") else t) for name, t in data["targets"].items()
        }
    return ModelConfig.model_validate(data)


def assemble(embedding=None, encoder=None, targets=None, **model_options: Any):
    """A ``UERModel`` from the parts above; ``vocab_size`` is required."""
    from uer_ray.models.model import UERModel

    return UERModel(model_config(embedding, encoder, targets, **model_options))

"""uer-ray: UER-py's models (embedding + encoder + weighted targets) trained and served with Ray.

Public API (imported lazily, so ``import uer_ray`` stays cheap)::

    from uer_ray import load_model, build_model, embedding, encoder, targets, assemble, convert, embed_sentences

(``embed_sentences`` is ``uer_ray.embed.embed``: a package attribute named ``embed`` would clash with the module.)
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_model": "uer_ray.models.model",
    "build_model": "uer_ray.models.model",
    "UERModel": "uer_ray.models.model",
    "Backbone": "uer_ray.models.model",
    "ModelConfig": "uer_ray.config",
    "embedding": "uer_ray.api",
    "encoder": "uer_ray.api",
    "targets": "uer_ray.api",
    "model_config": "uer_ray.api",
    "assemble": "uer_ray.api",
    "convert": "uer_ray.models.convert",
    "embed_sentences": "uer_ray.embed",
    "encode_texts": "uer_ray.embed",
    "build_tokenizer": "uer_ray.tokenizers",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'uer_ray' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)

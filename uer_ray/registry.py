"""Name -> component registries (fairseq's habit): adding a module is one class and one decorator.

Each registered class may carry a nested pydantic ``Config`` (its options, and nothing else); config validation
looks the class up by name and validates the options against that ``Config``.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, TypeVar

T = TypeVar("T")


class UnknownComponentError(ValueError):
    """A config names a component that no registry knows; the message lists the known names."""


class Registry:
    def __init__(self, kind: str, modules: tuple[str, ...] = ()):
        self.kind = kind
        # Modules whose import registers this registry's entries; imported on first lookup.
        self._modules = modules
        self._entries: dict[str, Any] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = obj
            setattr(obj, "registry_name", name)
            return obj

        return decorate

    def _load(self) -> None:
        for module in self._modules:
            importlib.import_module(module)

    def get(self, name: str) -> Any:
        self._load()
        if name not in self._entries:
            raise UnknownComponentError(
                f"unknown {self.kind} '{name}'; known {self.kind}s: {', '.join(self.names())}"
            )
        return self._entries[name]

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries


EMBEDDINGS = Registry("embedding", ("uer_ray.models.embeddings",))
ENCODERS = Registry("encoder", ("uer_ray.models.encoders",))
SUBENCODERS = Registry("subencoder", ("uer_ray.models.subencoders",))
TARGETS = Registry("target", ("uer_ray.models.targets",))
TOKENIZERS = Registry("tokenizer", ("uer_ray.tokenizers",))
PROCESSORS = Registry("data processor", ("uer_ray.data.processors",))
TASKS = Registry("task", ("uer_ray.finetune.tasks",))

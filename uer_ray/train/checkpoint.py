"""Checkpoints that never execute code: ``model.safetensors`` + ``config.json`` (+ ``vocab.txt``) + ``train_state.pt``
(optimizer, scheduler, step, data position; loaded with ``weights_only=True``). Written to a temp dir, then renamed.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
VOCAB = "vocab.txt"
TRAIN_STATE = "train_state.pt"


def save_checkpoint(directory: Path, model: torch.nn.Module, config: dict, vocab=None, train_state: dict | None = None) -> Path:
    """``config``: ``{"model": ..., "tokenizer": ..., ...}`` as JSON-able dicts."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=directory.parent))
    save_model(unwrap(model), str(tmp / WEIGHTS))  # handles tied (shared) tensors
    (tmp / CONFIG).write_text(json.dumps(config, indent=2, ensure_ascii=False, default=str))
    if vocab is not None:
        vocab.save(tmp / VOCAB)
    if train_state is not None:
        torch.save(train_state, tmp / TRAIN_STATE)
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(tmp, directory)
    return directory


def load_weights(directory: Path, model: torch.nn.Module, strict: bool = True) -> list[str]:
    """Load weights into ``model``; returns the missing keys when not strict (e.g. a fresh fine-tuning head)."""
    missing, unexpected = load_model(unwrap(model), str(Path(directory) / WEIGHTS), strict=strict)
    return list(missing)


def load_config(directory: Path) -> dict:
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"not a uer-ray checkpoint (no {CONFIG}): {directory}")
    return json.loads(path.read_text())


def load_train_state(directory: Path) -> dict | None:
    path = Path(directory) / TRAIN_STATE
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model

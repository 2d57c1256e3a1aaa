"""A model checkpoint directory that never executes code: ``model.safetensors`` + ``config.json`` (+ ``vocab.txt``).

Training checkpoints add their state beside these (``train/checkpointer.py``). Directories are written fresh (a local
temp dir that Ray Train uploads, or one published atomically with ``storage.publish_dir``), never overwritten in place.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, load_model, save_model

from uer_ray import storage
from uer_ray.errors import UserError

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
VOCAB = "vocab.txt"
TRAIN_STATE_JSON = "trainer_state.json"


def save_checkpoint(directory: Path, model: torch.nn.Module, config: dict, vocab=None) -> Path:
    """Write the model into ``directory`` (a fresh local directory). ``config``: ``{"model": ..., "tokenizer": ...}``
    as JSON-able dicts."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_model(unwrap(model), str(directory / WEIGHTS))  # handles tied (shared) tensors
    (directory / CONFIG).write_text(json.dumps(config, indent=2, ensure_ascii=False, default=str))
    if vocab is not None:
        vocab.save(directory / VOCAB)
    return directory


def load_weights(directory: str | Path, model: torch.nn.Module, strict: bool = True) -> tuple[list[str], list[str]]:
    """Load weights into ``model`` from a checkpoint (local or in storage); returns (missing, unexpected) keys."""
    path = storage.local_path(str(directory)) / WEIGHTS
    missing, unexpected = load_model(unwrap(model), str(path), strict=strict)
    return list(missing), list(unexpected)


def load_matching(directory: str | Path, model: torch.nn.Module) -> tuple[list[str], list[str]]:
    """Load the checkpoint's tensors that the model has under the same name and shape (a fine-tuned model's head fits
    a task with its label set, not one with another); returns (the model's weights left as they were, the checkpoint's
    tensors whose shape differs)."""
    target = unwrap(model)
    own = target.state_dict()
    saved = load_file(str(storage.local_path(str(directory)) / WEIGHTS))
    matching = {k: v for k, v in saved.items() if k in own and own[k].shape == v.shape}
    target.load_state_dict(matching, strict=False)
    loaded = {own[k].data_ptr() for k in matching}  # a tied weight is loaded with the tensor it shares
    return ([k for k in own if k not in matching and own[k].data_ptr() not in loaded],
            [k for k in own if k in saved and k not in matching])


def check_encoder_fits(location: str, model: torch.nn.Module, key: str) -> None:
    """Refuse, naming ``key``, a checkpoint that lacks one of the model's embedding or encoder weights or holds it in
    another shape: it was made for another model. Reads the safetensors header only; runs on the driver, so the
    mistake is reported before any worker starts (heads may differ: they start fresh)."""
    from safetensors import safe_open

    path = storage.local_path(storage.join(storage.resolve_published(str(location)), WEIGHTS))
    with safe_open(str(path), "pt") as f:
        saved = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    own = unwrap(model).state_dict()
    needed = {k: tuple(v.shape) for k, v in own.items() if k.startswith(("embedding.", "encoder."))}
    missing = [k for k in needed if k not in saved]
    if missing:
        raise UserError(f"{key}: {location} lacks {len(missing)} of the model's {len(needed)} encoder weights "
                        f"(e.g. {', '.join(missing[:3])}): it was made for another model")
    reshaped = [k for k in needed if saved[k] != needed[k]]
    if reshaped:
        name = reshaped[0]
        raise UserError(f"{key}: {location} holds {len(reshaped)} encoder weight(s) in another shape (e.g. {name}: "
                        f"{list(saved[name])}, the model's {list(needed[name])}): it was made for another model")


def load_config(location: str | Path) -> dict:
    location = storage.resolve_published(str(location))
    path = storage.join(location, CONFIG)
    if not storage.exists(path):
        raise FileNotFoundError(f"not a uer-ray checkpoint (no {CONFIG}): {location}")
    return storage.read_json(path)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return model.module if hasattr(model, "module") else model


def checkpoint_tokenizer(location: str) -> dict | None:
    """The tokenizer config saved with a checkpoint, its vocabulary read from the checkpoint's own copy."""
    location = storage.resolve_published(str(location))
    saved = load_config(location).get("tokenizer")
    if not saved:
        return None
    tokenizer = dict(saved)
    if "vocab_path" in tokenizer and storage.exists(storage.join(location, VOCAB)):
        tokenizer["vocab_path"] = storage.join(location, VOCAB)
    return tokenizer

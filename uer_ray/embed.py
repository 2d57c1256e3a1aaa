"""Sentence vectors for a text file (one sentence a line) from a uer-ray checkpoint, with Ray Data.

One actor loads the model once and encodes batches; the output is a float32 ``.npy`` with one row per input line, in
input order (empty lines included: they embed ``[CLS] [SEP]``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

POOLINGS = ("cls", "mean", "max", "last")


def load_encoder(checkpoint: str | Path):
    """(model in eval mode, tokenizer) from a pre-training or fine-tuned uer-ray checkpoint (local or in storage)."""
    from uer_ray.registry import TOKENIZERS
    from uer_ray.tokenizers import build_tokenizer
    from uer_ray.train.checkpoint import checkpoint_tokenizer, load_config

    tok_cfg = checkpoint_tokenizer(str(checkpoint))
    if not tok_cfg:
        raise ValueError(f"{checkpoint}: the checkpoint records no tokenizer; sentence vectors need one")
    tokenizer = build_tokenizer(getattr(TOKENIZERS.get(tok_cfg["name"]), "Config").model_validate(tok_cfg))
    if "finetune" in load_config(str(checkpoint)):
        from uer_ray.finetune.infer import load_finetuned

        _, model = load_finetuned(str(checkpoint))
    else:
        from uer_ray.models.model import load_model

        model = load_model(checkpoint)
    return model.eval(), tokenizer


def _special(vocab, name: str) -> int | None:
    try:
        return getattr(vocab, f"{name}_id")
    except Exception:  # a vocabulary without that special token
        return None


def encode_texts(model, tokenizer, texts, seq_length: int = 128, pooling: str = "cls") -> np.ndarray:
    """Texts -> (len(texts), hidden) float32 sentence vectors: ``[CLS] tokens [SEP]`` cut to ``seq_length``."""
    import torch

    from uer_ray.models.targets import pool

    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; known: {', '.join(POOLINGS)}")
    vocab = tokenizer.vocab
    cls, sep, pad = _special(vocab, "cls"), _special(vocab, "sep"), _special(vocab, "pad") or 0
    head, tail = [cls] if cls is not None else [], [sep] if sep is not None else []
    room = seq_length - len(head) - len(tail)
    if room < 1:
        raise ValueError(f"seq_length {seq_length} leaves no room for tokens")
    max_len = getattr(model.config, "max_seq_length", seq_length)
    if seq_length > max_len:
        raise ValueError(f"seq_length {seq_length} exceeds the model's max_seq_length {max_len}")
    rows = [head + ids[:room] + tail for ids in tokenizer.encode_batch([str(t) for t in texts])]
    longest = max((len(r) for r in rows), default=1)
    src = np.full((len(rows), longest), pad, dtype=np.int64)
    seg = np.zeros((len(rows), longest), dtype=np.int64)
    for i, row in enumerate(rows):
        src[i, : len(row)] = row
        seg[i, : len(row)] = 1
    if not rows:
        return np.zeros((0, model.config.hidden_size), dtype=np.float32)
    src_t, seg_t = torch.from_numpy(src), torch.from_numpy(seg)
    with torch.inference_mode():
        hidden = model.encode(src_t, seg_t).float()
        vectors = pool(hidden, seg_t, "first" if pooling == "cls" else pooling)
    return vectors.numpy().astype(np.float32, copy=False)


class SentenceEncoder:
    """A Ray Data actor: loads the checkpoint once, turns ``{"text": [...]}`` batches into ``{"vector": ...}``."""

    def __init__(self, checkpoint_dir: str, seq_length: int, pooling: str):
        self.model, self.tokenizer = load_encoder(checkpoint_dir)
        self.seq_length, self.pooling = seq_length, pooling

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = encode_texts(self.model, self.tokenizer, list(batch["text"]), self.seq_length, self.pooling)
        return {"vector": vectors}


def embed(
    checkpoint_dir: str | Path,
    input_path: str | Path,
    output_path: str | Path,
    pooling: str = "cls",
    batch_size: int = 64,
    seq_length: int = 128,
    num_cpus: float = 0.5,
) -> Path:
    """Write ``output_path`` (.npy, float32, one row per line of ``input_path``, in order); returns its path.

    Starts a local Ray when none is running (the CLI starts or joins one first).
    """
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; known: {', '.join(POOLINGS)}")
    from uer_ray import storage
    from uer_ray.train.checkpoint import load_config

    checkpoint_dir = storage.resolve_published(storage.absolute(checkpoint_dir))
    load_config(checkpoint_dir)  # not a checkpoint: fails here, not in an actor
    input_path, output_path = Path(input_path), Path(output_path)
    if not input_path.is_file():
        raise FileNotFoundError(f"input file not found: {input_path}")
    if output_path.suffix != ".npy":
        output_path = output_path.with_suffix(output_path.suffix + ".npy")
    if not ray.is_initialized():
        from uer_ray.config import RunConfig
        from uer_ray.runtime import init_ray

        init_ray(RunConfig(), dashboard=False)

    ctx = DataContext.get_current()
    previous = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = True  # one output row per input line, in order
    try:
        ds = ray.data.read_text(str(input_path.resolve()), drop_empty_lines=False)
        ds = ds.map_batches(
            SentenceEncoder,
            fn_constructor_kwargs={"checkpoint_dir": str(checkpoint_dir), "seq_length": seq_length, "pooling": pooling},
            batch_size=batch_size,
            batch_format="numpy",
            compute=ActorPoolStrategy(min_size=1, max_size=1),
            num_cpus=num_cpus,
            udf_modifying_row_count=False,
        )
        parts = [np.asarray(b["vector"], dtype=np.float32) for b in ds.iter_batches(batch_size=None, batch_format="numpy")]
    finally:
        ctx.execution_options.preserve_order = previous
    parts = [p for p in parts if len(p)]
    vectors = np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(output_path, vectors)
    return output_path


embed_sentences = embed  # the name exported by ``uer_ray`` (``uer_ray.embed`` is this module)

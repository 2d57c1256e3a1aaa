"""Vocabularies from a corpus: a WordPiece-compatible char/word vocab counted with Ray Data, and a SentencePiece
model trained on a corpus sample. Both put [PAD] [UNK] [CLS] [SEP] [MASK] at ids 0..4."""
from __future__ import annotations

import collections
import os
import tempfile
import time
import unicodedata
from pathlib import Path
from typing import Literal

import numpy as np

from uer_ray.data.corpus import RepairLog, expand_paths, plan_chunks, read_chunk
from uer_ray.tokenizers import SPECIAL_TOKENS, Vocab, build_vocab


def _split(text: str, mode: str, lowercase: bool) -> list[str]:
    if lowercase:
        text = text.lower()
    if mode == "char":
        return [c for c in text if not c.isspace()]
    return text.split()


class _ChunkCounter:
    """Ray Data task: a chunk descriptor -> (token, count) rows of that chunk."""

    def __init__(self, mode: str, lowercase: bool, max_line_chars: int):
        self.mode, self.lowercase, self.max_line_bytes = mode, lowercase, max_line_chars * 4

    def __call__(self, batch: dict) -> dict:
        counts: collections.Counter = collections.Counter()
        for i in range(len(batch["index"])):
            chunk = {k: batch[k][i].item() if hasattr(batch[k][i], "item") else batch[k][i] for k in batch}
            for doc in read_chunk(chunk, "line", self.max_line_bytes, RepairLog()):
                for line in doc:
                    counts.update(_split(line, self.mode, self.lowercase))
        tokens = sorted(counts)
        return {"token": np.array(tokens, dtype=object), "count": np.array([counts[t] for t in tokens], np.int64)}


def count_tokens(
    corpus: list[str], mode: Literal["char", "word"] = "char", lowercase: bool = True, chunk_mb: float = 4.0,
    max_line_chars: int = 100_000,
) -> collections.Counter:
    """Token counts over the corpus: each chunk counted by a Ray Data task, the per-chunk counts merged here."""
    import ray

    from uer_ray.config import RunConfig
    from uer_ray.runtime import init_ray

    init_ray(RunConfig(), dashboard=False)
    chunks = plan_chunks(expand_paths(corpus), int(chunk_mb * 2**20))
    for c in chunks:
        c.setdefault("whole", False)
    data = ray.data.from_items(chunks, override_num_blocks=len(chunks)).map_batches(
        _ChunkCounter, fn_constructor_kwargs={"mode": mode, "lowercase": lowercase, "max_line_chars": max_line_chars},
        batch_size=1, num_cpus=0.5, compute=ray.data.ActorPoolStrategy(min_size=1, max_size=2),
    )
    total: collections.Counter = collections.Counter()
    for batch in data.iter_batches(batch_size=None, batch_format="numpy"):
        total.update(dict(zip(batch["token"].tolist(), batch["count"].tolist())))
    return total


def build_vocab_from_corpus(
    corpus: list[str] | str,
    output_path: str | os.PathLike,
    mode: Literal["char", "word"] = "char",
    min_count: int = 1,
    max_size: int | None = None,
    lowercase: bool = True,
    wordpiece_suffixes: bool = True,
    chunk_mb: float = 4.0,
    progress=print,
) -> Vocab:
    """Count tokens of ``corpus`` (files, directories, globs, URIs) and write a BERT-format vocab file.

    ``mode="char"``: every non-space character (what the ``char`` tokenizer reads); ``"word"``: whitespace-separated
    words (the ``space`` tokenizer). ``wordpiece_suffixes`` also adds ``##t`` for every kept token ``t`` (after the
    tokens themselves, within ``max_size``), so the ``bert`` (WordPiece) tokenizer can use the vocab too.
    Specials come first ([PAD] [UNK] [CLS] [SEP] [MASK] = ids 0..4); then tokens by descending count, ties by text.
    """
    started = time.time()
    if isinstance(corpus, (str, os.PathLike)):
        corpus = [str(corpus)]
    counts = count_tokens([str(c) for c in corpus], mode=mode, lowercase=lowercase, chunk_mb=chunk_mb)
    vocab = build_vocab(counts, min_count=min_count)
    tokens = vocab.tokens
    if wordpiece_suffixes:  # max_size holds both: the most frequent n tokens and their n continuations
        body = tokens[len(SPECIAL_TOKENS):]
        if max_size is not None:
            body = body[: (max_size - len(SPECIAL_TOKENS)) // 2]
        tokens = list(SPECIAL_TOKENS) + body + [f"##{t}" for t in body if not t.startswith("##")]
    elif max_size is not None:
        tokens = tokens[:max_size]
    vocab = Vocab(tokens, source=str(output_path))
    Path(output_path).parent.mkdir(parents=True, exist_ok=True)
    vocab.save(output_path)
    progress(
        f"build-vocab: {len(vocab):,} tokens ({sum(counts.values()):,} counted, {len(counts):,} distinct, "
        f"min_count={min_count}) -> {output_path} in {time.time() - started:.1f}s"
    )
    return Vocab.load(output_path)


def sample_lines(corpus: list[str], max_lines: int, seed: int = 7, max_line_chars: int = 100_000) -> list[str]:
    """A uniform sample (reservoir, streaming: memory bounded by ``max_lines``) of the corpus' non-empty lines."""
    rng = np.random.default_rng(seed)
    reservoir: list[str] = []
    seen = 0
    for chunk in plan_chunks(expand_paths(corpus), 1 << 62):
        for doc in read_chunk(chunk, "line", max_line_chars * 4, RepairLog()):
            for line in doc:
                seen += 1
                if len(reservoir) < max_lines:
                    reservoir.append(line)
                else:
                    j = int(rng.integers(0, seen))
                    if j < max_lines:
                        reservoir[j] = line
    return reservoir


def train_spm(
    corpus: list[str] | str,
    model_prefix: str | os.PathLike,
    vocab_size: int = 8000,
    model_type: Literal["unigram", "bpe", "char", "word"] = "unigram",
    character_coverage: float = 0.9995,
    sample_lines_count: int = 1_000_000,
    lowercase: bool = False,
    seed: int = 7,
    progress=print,
) -> Path:
    """Train a SentencePiece model on a sample of ``corpus``; returns ``<model_prefix>.model``.

    Ids 0..4 are [PAD] [UNK] [CLS] [SEP] [MASK] (pad/unk pieces renamed, the other three user-defined symbols), so
    the ``spm`` tokenizer's vocab matches every other vocab's special ids; no BOS/EOS pieces.
    """
    import sentencepiece as spm

    started = time.time()
    if isinstance(corpus, (str, os.PathLike)):
        corpus = [str(corpus)]
    lines = sample_lines([str(c) for c in corpus], sample_lines_count, seed=seed)
    if not lines:
        raise ValueError(f"train_spm: no text in {corpus}")
    if lowercase:
        lines = [line.lower() for line in lines]
    model_prefix = Path(model_prefix)
    model_prefix.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt", delete=False) as f:
        f.write("\n".join(unicodedata.normalize("NFC", line) for line in lines) + "\n")
        sample_path = f.name
    try:
        spm.SentencePieceTrainer.train(
            input=sample_path,
            model_prefix=str(model_prefix),
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            pad_id=0, pad_piece="[PAD]",
            unk_id=1, unk_piece="[UNK]",
            bos_id=-1, eos_id=-1,
            user_defined_symbols=["[CLS]", "[SEP]", "[MASK]"],
            input_sentence_size=len(lines),
            shuffle_input_sentence=False,
            hard_vocab_limit=False,
            num_threads=os.cpu_count() or 1,
            minloglevel=2,
        )
    finally:
        os.unlink(sample_path)
    path = model_prefix.with_name(model_prefix.name + ".model")
    progress(f"build-spm: {vocab_size} pieces ({model_type}) from {len(lines):,} sampled lines -> {path} "
             f"in {time.time() - started:.1f}s")
    return path

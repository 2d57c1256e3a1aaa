"""BERT masking (80% [MASK], 10% random token, 10% unchanged), vectorised over a padded batch.

Used at training time on the worker (dynamic masking: new masks every epoch, as RoBERTa) and at preprocessing time
(static masking). Three ways to choose the positions (``strategy``):

- ``token``: positions uniformly at random (BERT);
- ``whole_word``: whole words (all tokens of a word together, Chinese BERT-wwm); word boundaries come from a
  ``word_start`` array (1 where a word starts) that preprocessing computes with jieba (``word_start_flags``);
- ``span``: contiguous spans with geometric lengths (SpanBERT: p = 0.2, at most 10 tokens).

Each row masks round(prob * maskable tokens) positions, at least one (whole words may overshoot by a word's length).
"""
from __future__ import annotations

import numpy as np

IGNORE = -100
_JOIN_BREAK = "\u2063"  # a placeholder character standing for special tokens when re-segmenting a row with jieba


def _choose_token(scores: np.ndarray, maskable: np.ndarray, per_row: np.ndarray) -> np.ndarray:
    scores[~maskable] = 2.0  # never chosen
    ranks = scores.argsort(1).argsort(1)
    return (ranks < per_row[:, None]) & maskable


def _choose_whole_word(rng, maskable: np.ndarray, word_start: np.ndarray, per_row: np.ndarray) -> np.ndarray:
    rows, width = maskable.shape
    starts = (word_start.astype(bool) | ~maskable)
    starts[:, 0] = True
    word_id = np.cumsum(starts.ravel()) - 1  # global word ids, row-major: unique across rows
    word_score = rng.random(int(word_id[-1]) + 1 if word_id.size else 0)
    token_score = word_score[word_id].reshape(rows, width)
    token_score[~maskable] = 2.0
    order = np.argsort(token_score, axis=1, kind="stable")  # tokens of one word are contiguous in this order
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(width)[None, :].repeat(rows, 0), axis=1)
    first_rank = np.full(word_score.shape, width, dtype=np.int64)
    np.minimum.at(first_rank, word_id, rank.ravel())
    return (first_rank[word_id].reshape(rows, width) < per_row[:, None]) & maskable


def _choose_span(rng, maskable: np.ndarray, per_row: np.ndarray, span_p: float, span_max: int) -> np.ndarray:
    chosen = np.zeros_like(maskable)
    for row in range(maskable.shape[0]):
        positions = np.flatnonzero(maskable[row])
        if positions.size == 0:
            continue
        budget = int(per_row[row])
        picked = np.zeros(positions.size, dtype=bool)
        count = 0
        for _ in range(4 * budget + 4):  # bounded: a crowded row stops early
            if count >= budget:
                break
            length = min(int(rng.geometric(span_p)), span_max, budget - count)
            start = int(rng.integers(0, positions.size))
            stop = min(start + length, positions.size)
            count += int((~picked[start:stop]).sum())
            picked[start:stop] = True
        chosen[row, positions[picked]] = True
    return chosen


def mask_tokens(
    src: np.ndarray,
    maskable: np.ndarray,
    mask_id: int,
    vocab_size: int,
    rng: np.random.Generator,
    prob: float = 0.15,
    strategy: str = "token",
    word_start: np.ndarray | None = None,
    span_p: float = 0.2,
    span_max: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """``src`` (batch, seq) ids, ``maskable`` same-shape bool -> (masked src, labels with IGNORE elsewhere).

    ``strategy``: ``token`` | ``whole_word`` (needs ``word_start``, same shape, 1 at a word's first token; without it
    falls back to ``token``) | ``span`` (geometric lengths with ``span_p``, clipped at ``span_max``).
    """
    per_row = np.maximum(1, np.rint(maskable.sum(1) * prob)).astype(np.int64)
    if strategy == "whole_word" and word_start is not None:
        chosen = _choose_whole_word(rng, maskable, np.asarray(word_start)[:, : src.shape[1]], per_row)
    elif strategy == "span":
        chosen = _choose_span(rng, maskable, per_row, span_p, span_max)
    elif strategy in ("token", "whole_word"):
        chosen = _choose_token(rng.random(src.shape), maskable, per_row)
    else:
        raise ValueError(f"unknown masking strategy {strategy!r}; use token, whole_word or span")
    labels = np.where(chosen, src, IGNORE)
    action = rng.random(src.shape)
    masked = src.copy()
    masked[chosen & (action < 0.8)] = mask_id
    randomise = chosen & (action >= 0.8) & (action < 0.9)
    masked[randomise] = rng.integers(0, vocab_size, size=int(randomise.sum()))
    return masked, labels


def word_start_flags(rows: list[list[int]], vocab) -> list[list[int]]:
    """For each row of token ids, 1 where a word starts, 0 inside a word: the row's tokens are joined into text
    (WordPiece ``##`` continuations never start a word, special tokens are words of their own) and segmented with
    jieba, then every token starting at a word boundary starts a word."""
    import jieba

    jieba.setLogLevel(60)
    specials = {vocab.pad_id, vocab.unk_id, vocab.cls_id, vocab.sep_id, vocab.mask_id}
    out = []
    for row in rows:
        pieces, cont = [], []
        for i in row:
            if i in specials:
                pieces.append(_JOIN_BREAK)
                cont.append(False)
            else:
                token = vocab.id_to_token(i)
                is_cont = token.startswith("##") and len(token) > 2
                pieces.append(token[2:] if is_cont else token)
                cont.append(is_cont)
        text = "".join(pieces)
        boundaries = set()
        at = 0
        for word in jieba.cut(text, HMM=False):
            boundaries.add(at)
            at += len(word)
        flags, at = [], 0
        for piece, is_cont, i in zip(pieces, cont, row):
            flags.append(int(i in specials or (not is_cont and at in boundaries)))
            at += len(piece)
        out.append(flags)
    return out

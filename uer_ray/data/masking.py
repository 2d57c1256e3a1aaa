"""BERT masking (80% [MASK], 10% random token, 10% unchanged), vectorised over a padded batch.

Used at training time on the worker (dynamic masking: new masks every epoch, as RoBERTa) and at preprocessing time
(static masking).
"""
from __future__ import annotations

import numpy as np

IGNORE = -100


def mask_tokens(
    src: np.ndarray,
    maskable: np.ndarray,
    mask_id: int,
    vocab_size: int,
    rng: np.random.Generator,
    prob: float = 0.15,
) -> tuple[np.ndarray, np.ndarray]:
    """``src`` (batch, seq) ids, ``maskable`` same-shape bool -> (masked src, labels with IGNORE elsewhere).

    Each row masks round(prob * maskable tokens) positions, at least one, chosen uniformly.
    """
    scores = rng.random(src.shape)
    scores[~maskable] = 2.0  # never chosen
    per_row = np.maximum(1, np.rint(maskable.sum(1) * prob)).astype(np.int64)
    ranks = scores.argsort(1).argsort(1)
    chosen = (ranks < per_row[:, None]) & maskable
    labels = np.where(chosen, src, IGNORE)
    action = rng.random(src.shape)
    masked = src.copy()
    masked[chosen & (action < 0.8)] = mask_id
    randomise = chosen & (action >= 0.8) & (action < 0.9)
    masked[randomise] = rng.integers(0, vocab_size, size=int(randomise.sum()))
    return masked, labels

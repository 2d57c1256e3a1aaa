"""Dynamic masking on the training worker follows the dataset's masking options (from its manifest)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from uer_ray.config import build_config
from uer_ray.data.collate import collate_instances
from uer_ray.tokenizers import Vocab

VOCAB = Vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"t{i}" for i in range(95)])


def batch_table(rows=16, words=10, word_len=3):
    src, seg, starts = [], [], []
    rng = np.random.default_rng(0)
    for _ in range(rows):
        body = rng.integers(5, 100, size=words * word_len).tolist()
        src.append([2, *body, 3])
        seg.append([1] * len(src[-1]))
        starts.append([0] + [1 if i % word_len == 0 else 0 for i in range(len(body))] + [0])
    ids = pa.list_(pa.int32())
    return pa.table({"src": pa.array(src, ids), "seg": pa.array(seg, ids), "word_start": pa.array(starts, pa.list_(pa.int8()))})


def test_whole_word_masking_masks_whole_words():
    targets = build_config({"model": {"targets": {"mlm": 1.0}}, "data": {"processor": "mlm"}}).model.targets
    table = batch_table()
    batch = collate_instances(table, targets, VOCAB, np.random.default_rng(1),
                              {"masking_strategy": "whole_word", "mask_prob": 0.3})
    labelled = (batch["tgt_mlm"] != -100).numpy()[:, 1:-1].reshape(16, 10, 3)
    assert labelled.any()
    assert np.all(labelled.all(-1) | ~labelled.any(-1)), "a word was only partly masked"


def test_each_epoch_draws_new_masks():
    targets = build_config({"model": {"targets": {"mlm": 1.0}}, "data": {"processor": "mlm"}}).model.targets
    table = batch_table()
    first = collate_instances(table, targets, VOCAB, np.random.default_rng([7, 0, 0, 0]))["tgt_mlm"]
    second = collate_instances(table, targets, VOCAB, np.random.default_rng([7, 0, 1, 0]))["tgt_mlm"]
    assert not np.array_equal(first.numpy(), second.numpy())

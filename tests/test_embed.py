"""Sentence vectors with Ray Data (a real local Ray): one float32 row per input line, in order."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from uer_ray import assemble, embedding, encoder, targets
from uer_ray.embed import embed, encode_texts, load_encoder
from uer_ray.models.convert import Bundle, write_uer_ray

LINES = [
    "今天天气很好。",
    "我们去公园散步吧",
    "",  # empty lines keep their row
    "北京是中国的首都。",
    "机器学习",
    "这是一个很长的句子，" * 20,  # cut to seq_length
    "好",
    *[f"第{i}个句子：数字{i * 7}" for i in range(60)],  # several batches and blocks: order must hold
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, data_dir):
    torch.manual_seed(0)
    vocab = data_dir / "models" / "google_zh_vocab.txt"
    model = assemble(
        embedding("word", "pos", "seg"),
        encoder("transformer", layers_num=2, heads_num=2, feedforward_size=64),
        targets(mlm=1.0),
        vocab_size=sum(1 for _ in vocab.open(encoding="utf-8")), hidden_size=32, max_seq_length=64,
    ).eval()
    directory = tmp_path_factory.mktemp("embed") / "ckpt"
    write_uer_ray(Bundle(model, {"name": "bert", "vocab_path": "vocab.txt"}, vocab), directory)
    return directory


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_embed_file_with_ray_data(ray_session, checkpoint, tmp_path, pooling):
    text = tmp_path / "sentences.txt"
    text.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    out = embed(checkpoint, text, tmp_path / f"vectors_{pooling}.npy", pooling=pooling, batch_size=3, seq_length=32)
    vectors = np.load(out)
    assert vectors.dtype == np.float32 and vectors.shape == (len(LINES), 32)
    model, tokenizer = load_encoder(checkpoint)
    expected = np.concatenate([encode_texts(model, tokenizer, [line], 32, pooling) for line in LINES])
    diff = float(np.abs(vectors - expected).max())
    print(f"max|diff| embed({pooling}) vs in-process, row by row: {diff:.3e}")
    assert diff <= 1e-5  # same rows in the same order (padding within a batch does not change a sentence's vector)
    assert not np.allclose(vectors[0], vectors[1])


def test_encode_texts_pooling_and_errors(checkpoint):
    model, tokenizer = load_encoder(checkpoint)
    cls = encode_texts(model, tokenizer, LINES[:2], 16, "cls")
    mean = encode_texts(model, tokenizer, LINES[:2], 16, "mean")
    assert cls.shape == mean.shape == (2, 32) and not np.allclose(cls, mean)
    with pytest.raises(ValueError, match="unknown pooling"):
        encode_texts(model, tokenizer, LINES[:1], 16, "median")
    with pytest.raises(ValueError, match="max_seq_length"):
        encode_texts(model, tokenizer, LINES[:1], 128, "cls")

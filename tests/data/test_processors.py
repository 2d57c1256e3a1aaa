"""Processors and masking without Ray: columns, invariants, determinism of the masks."""
from __future__ import annotations

import numpy as np
import pytest

from uer_ray.data.masking import IGNORE, mask_tokens, word_start_flags
from uer_ray.registry import PROCESSORS
from uer_ray.tokenizers import BertTokenizer, Vocab


@pytest.fixture(scope="module")
def tokenizer(vocab_path):
    return BertTokenizer(Vocab.load(vocab_path))


def _docs(tokenizer, n_docs=12, n_sent=6):
    text = "今天天气很好我们一起去公园散步吧然后吃饭"
    return [[tokenizer.encode(text[(d + s) % 7 :]) for s in range(n_sent)] for d in range(n_docs)]


def _processor(name, tokenizer, **opts):
    cls = PROCESSORS.get(name)
    return cls(cls.Config.model_validate({"name": name, "seq_length": 32, **opts}), tokenizer.vocab)


@pytest.mark.parametrize("name,feeds", [
    ("bert", ("mlm", "sp")), ("albert", ("mlm", "sp", "sop")), ("mlm", ("mlm",)), ("lm", ("lm",)),
    ("bilm", ("bilm",)), ("ae", ("ae",)), ("cls", ("cls",)), ("mt", ("seq2seq",)), ("seq2seq", ("seq2seq",)),
])
def test_feeds(name, feeds):
    assert PROCESSORS.get(name).feeds == feeds


@pytest.mark.parametrize("name", ["bert", "albert"])
def test_pair_processors(name, tokenizer):
    vocab = tokenizer.vocab
    table = _processor(name, tokenizer).build(_docs(tokenizer), np.random.default_rng(0))
    assert table.column_names == ["src", "seg", "tgt_sp"]
    assert str(table.schema.field("tgt_sp").type) == "int32"
    rows = table.to_pylist()
    assert rows and {r["tgt_sp"] for r in rows} == {0, 1}
    for r in rows:
        src, seg = r["src"], r["seg"]
        assert len(src) == len(seg) <= 32 and src[0] == vocab.cls_id and src[-1] == vocab.sep_id
        assert src.count(vocab.sep_id) == 2 and seg[0] == 1 and seg[-1] == 2
        assert seg.index(2) == src.index(vocab.sep_id) + 1


def test_albert_swaps_segments_of_one_document(tokenizer):
    vocab = tokenizer.vocab
    docs = [[[vocab.token_to_id(str(i))] * 3 for i in range(1, 6)]]  # one document, ordered sentences
    proc = _processor("albert", tokenizer, seq_length=64, short_seq_prob=0.0)
    for seed in range(10):
        for r in proc.build(docs, np.random.default_rng(seed)).to_pylist():
            sep = r["src"].index(vocab.sep_id)
            a, b = r["src"][1], r["src"][sep + 1]
            assert (a > b) == bool(r["tgt_sp"])


@pytest.mark.parametrize("name", ["lm", "bilm"])
def test_lm_packs_documents(name, tokenizer):
    vocab = tokenizer.vocab
    docs = _docs(tokenizer, 5, 2)
    table = _processor(name, tokenizer).build(docs, np.random.default_rng(0))
    assert table.column_names == ["src", "seg"]
    stream = [t for r in table.column("src").to_pylist() for t in r]
    assert stream == [t for d in docs for t in [vocab.cls_id, *[x for s in d for x in s], vocab.sep_id]]
    assert all(len(r) <= 32 for r in table.column("src").to_pylist())


def test_mlm_and_ae(tokenizer):
    vocab = tokenizer.vocab
    docs = _docs(tokenizer, 4, 3)
    for name in ("mlm", "ae"):
        table = _processor(name, tokenizer).build(docs, np.random.default_rng(0))
        assert table.column_names == ["src", "seg"]
        for r in table.column("src").to_pylist():
            assert r[0] == vocab.cls_id and r[-1] == vocab.sep_id and len(r) <= 32
    static = _processor("mlm", tokenizer, masking="static").build(docs, np.random.default_rng(0))
    assert static.column_names == ["src", "seg", "tgt_mlm"]
    for src, tgt in zip(static.column("src").to_pylist(), static.column("tgt_mlm").to_pylist()):
        assert len(src) == len(tgt) and any(t != IGNORE for t in tgt)


def test_cls_and_mt_parse_lines(tokenizer):
    from uer_ray.data.corpus import RepairLog

    log = RepairLog()
    proc = _processor("cls", tokenizer, labels_num=3)
    lines = ["1\t好书", "x\t坏", "3\t越界", "no tab", "0\t\u200b", "2\t很好"]
    docs, totals = proc.encode_docs([[l] for l in lines], [f"f:{i + 1}" for i in range(len(lines))], tokenizer, log)
    table = proc.build(docs, np.random.default_rng(0))
    assert table.column("tgt_cls").to_pylist() == [1, 2] and str(table.schema.field("tgt_cls").type) == "int32"
    assert log.counts["bad_label"] == 3 and log.examples["bad_label"] == ["f:2", "f:3", "f:4"]
    assert log.counts["no_tokens"] == 1

    mt = _processor("mt", tokenizer)
    docs, _ = mt.encode_docs([["中文\t英文"], ["无"]], ["f:1", "f:2"], tokenizer, log)
    table = mt.build(docs, np.random.default_rng(0))
    vocab = tokenizer.vocab
    assert table.column_names == ["src", "seg", "tgt_seq2seq"]
    assert table.column("tgt_seq2seq").to_pylist() == [[vocab.cls_id, *tokenizer.encode("英文"), vocab.sep_id]]
    assert log.counts["bad_pair"] == 1


def test_whole_word_flags_follow_jieba(tokenizer):
    vocab = tokenizer.vocab
    row = [vocab.cls_id, *tokenizer.encode("我们喜欢北京天安门"), vocab.sep_id]
    flags = word_start_flags([row], vocab)[0]
    # jieba: 我们 / 喜欢 / 北京 / 天安门
    assert flags == [1, 1, 0, 1, 0, 1, 0, 1, 0, 0, 1]


def test_whole_word_masking_masks_whole_words(tokenizer):
    vocab = tokenizer.vocab
    row = [vocab.cls_id, *tokenizer.encode("我们喜欢北京天安门，我们喜欢长城和故宫博物院。" * 3), vocab.sep_id]
    starts = np.array(word_start_flags([row], vocab) * 8, dtype=np.int8)
    src = np.array([row] * 8)
    maskable = ~np.isin(src, [vocab.cls_id, vocab.sep_id])
    _, labels = mask_tokens(src, maskable, vocab.mask_id, len(vocab), np.random.default_rng(1), 0.15,
                            strategy="whole_word", word_start=starts)
    chosen = labels != IGNORE
    assert chosen.any(1).all()
    word = np.cumsum(starts, 1)
    for r in range(8):
        for w in np.unique(word[r][chosen[r]]):
            assert chosen[r][word[r] == w].all()  # every token of a chosen word is chosen


def test_span_masking_is_contiguous_and_sized(tokenizer):
    rng = np.random.default_rng(0)
    src = rng.integers(10, 1000, size=(16, 128))
    maskable = np.ones_like(src, dtype=bool)
    maskable[:, 0] = maskable[:, -1] = False
    masked, labels = mask_tokens(src, maskable, 103, 1000, rng, 0.15, strategy="span", span_p=0.2, span_max=10)
    chosen = labels != IGNORE
    counts = chosen.sum(1)
    assert (counts == 19).all()  # round(0.15 * 126)
    runs = [np.diff(np.flatnonzero(np.diff(np.r_[0, row.astype(int), 0]))) [::2] for row in chosen]
    assert np.mean([len(r) for r in runs]) < 19  # spans, not isolated tokens
    assert not chosen[:, 0].any() and not chosen[:, -1].any()


def test_token_masking_backward_compatible():
    rng = np.random.default_rng(3)
    src = rng.integers(10, 1000, size=(4, 50))
    maskable = np.ones_like(src, dtype=bool)
    a = mask_tokens(src, maskable, 103, 1000, np.random.default_rng(5), 0.15)
    b = mask_tokens(src, maskable, 103, 1000, np.random.default_rng(5), 0.15, strategy="token")
    assert all((x == y).all() for x, y in zip(a, b))
    assert ((a[1] != IGNORE).sum(1) == 8).all()


def test_static_whole_word_and_dynamic_word_start(tokenizer):
    docs = _docs(tokenizer, 3, 3)
    dyn = _processor("mlm", tokenizer, masking_strategy="whole_word").build(docs, np.random.default_rng(0))
    assert dyn.column_names == ["src", "seg", "word_start"]
    assert [len(x) for x in dyn.column("word_start").to_pylist()] == [len(x) for x in dyn.column("src").to_pylist()]
    static = _processor("bert", tokenizer, masking="static", masking_strategy="span").build(
        _docs(tokenizer), np.random.default_rng(0))
    assert "tgt_mlm" in static.column_names and "word_start" not in static.column_names

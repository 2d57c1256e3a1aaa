"""Tokenizers and vocabularies: uer_ray/tokenizers.py."""
from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pydantic
import pytest

from uer_ray.registry import TOKENIZERS
from uer_ray.tokenizers import (
    CLS,
    MASK,
    PAD,
    SEP,
    SPECIAL_TOKENS,
    UNK,
    BertTokenizer,
    CharTokenizer,
    SpaceTokenizer,
    SpmTokenizer,
    Tokenizer,
    Vocab,
    build_tokenizer,
    build_vocab,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "uer"  # the reference data beside the checkout
ZH_VOCAB = DATA / "models" / "google_zh_vocab.txt"
EN_VOCAB = DATA / "models" / "google_uncased_en_vocab.txt"
SPM_MODEL = DATA / "models" / "cluecorpussmall_spm.model"
CORPUS = DATA / "corpora" / "CLUECorpusSmall_sampled.txt"

BLANK_INPUTS = ["", " ", "\t\n\r ", "\u3000"]
ODD_INPUTS = ["\u2028\x85 ", "\x00\x01\x02", "\u200b\ufeff", "\ufffd", "\x7f", "a\x00b\x1fc\ud800d \u2028 e\u0301 [UNK]", "\udcff"]


@pytest.fixture(scope="module")
def zh_vocab() -> Vocab:
    return Vocab.load(ZH_VOCAB)


@pytest.fixture(scope="module")
def en_vocab() -> Vocab:
    return Vocab.load(EN_VOCAB)


@pytest.fixture(scope="module")
def bert_zh(zh_vocab) -> BertTokenizer:
    return BertTokenizer(zh_vocab, do_lower_case=True)


@pytest.fixture(scope="module")
def bert_en() -> BertTokenizer:
    return build_tokenizer(BertTokenizer.Config(name="bert", vocab_path=EN_VOCAB))


@pytest.fixture(scope="module")
def spm_tok() -> SpmTokenizer:
    return build_tokenizer(SpmTokenizer.Config(name="spm", spm_model_path=SPM_MODEL))


@pytest.fixture()
def small_vocab_file(tmp_path) -> Path:
    vocab = build_vocab(collections.Counter({"a": 5, "b": 3, "中": 2, "hello": 4, "world": 1}))
    path = tmp_path / "vocab.txt"
    vocab.save(path)
    return path


# ---------------------------------------------------------------------------------------------------------------- vocab
def test_special_ids_of_each_vocab(zh_vocab, en_vocab, spm_tok):
    for vocab, size in ((zh_vocab, 21128), (en_vocab, 30522)):
        assert len(vocab) == size
        assert (vocab.pad_id, vocab.unk_id, vocab.cls_id, vocab.sep_id, vocab.mask_id) == (0, 100, 101, 102, 103)
    v = spm_tok.vocab
    assert len(v) == 100000 == spm_tok.vocab_size
    assert (v.pad_id, v.unk_id, v.cls_id, v.sep_id, v.mask_id) == (0, 1, 2, 3, 4)
    assert [zh_vocab.id_to_token(i) for i in (0, 100, 101, 102, 103)] == [PAD, UNK, CLS, SEP, MASK]


def test_vocab_lookup_and_sha(zh_vocab, en_vocab):
    assert zh_vocab.token_to_id("我") == zh_vocab.tokens.index("我")
    assert zh_vocab.token_to_id("definitely-not-a-token") == zh_vocab.unk_id
    assert "我" in zh_vocab and "definitely-not-a-token" not in zh_vocab
    with pytest.raises(IndexError):
        zh_vocab.id_to_token(len(zh_vocab))
    assert len(zh_vocab.sha256) == 64
    assert zh_vocab.sha256 == Vocab.load(ZH_VOCAB).sha256 != en_vocab.sha256


def test_vocab_load_keeps_tokens_verbatim_and_first_duplicate(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n a \nx\nx\n##y\n", encoding="utf-8")
    v = Vocab.load(path)
    assert len(v) == 9
    assert v.tokens[5] == " a "
    assert v.token_to_id("x") == 6 and v.id_to_token(7) == "x"
    out = tmp_path / "out.txt"
    v.save(out)
    assert Vocab.load(out) == v and Vocab.load(out).sha256 == v.sha256


def test_vocab_load_names_missing_specials(tmp_path):
    path = tmp_path / "broken_vocab.txt"
    path.write_text("[PAD]\n[UNK]\n[SEP]\nhello\n", encoding="utf-8")
    with pytest.raises(ValueError) as err:
        Vocab.load(path)
    msg = str(err.value)
    assert str(path) in msg and "[CLS]" in msg and "[MASK]" in msg
    assert "[PAD]" not in msg and "[SEP]" not in msg


def test_build_vocab_order_min_count_max_size():
    counts = collections.Counter({"b": 3, "a": 3, "c": 5, "d": 1, "e": 2, UNK: 7})
    v = build_vocab(counts)
    assert v.tokens == list(SPECIAL_TOKENS) + ["c", "a", "b", "e", "d"]
    assert build_vocab(dict(counts), min_count=2).tokens == list(SPECIAL_TOKENS) + ["c", "a", "b", "e"]
    assert build_vocab(counts, max_size=7).tokens == list(SPECIAL_TOKENS) + ["c", "a"]
    assert build_vocab(counts, min_count=3, max_size=100).tokens == list(SPECIAL_TOKENS) + ["c", "a", "b"]
    assert build_vocab({}).tokens == list(SPECIAL_TOKENS)
    with pytest.raises(ValueError):
        build_vocab(counts, max_size=3)


# ------------------------------------------------------------------------------------------------------------ registry
def test_registry_lists_the_four_tokenizers():
    assert {"char", "space", "bert", "spm"} <= set(TOKENIZERS.names())
    assert TOKENIZERS.get("bert") is BertTokenizer and TOKENIZERS.get("spm") is SpmTokenizer
    assert TOKENIZERS.get("char") is CharTokenizer and TOKENIZERS.get("space") is SpaceTokenizer


def test_configs_are_strict(tmp_path):
    with pytest.raises(pydantic.ValidationError):
        BertTokenizer.Config(name="bert", vocab_path=tmp_path / "missing.txt")
    with pytest.raises(pydantic.ValidationError):
        BertTokenizer.Config(name="bert", vocab_path=ZH_VOCAB, lowercase=True)
    cfg = BertTokenizer.Config.model_validate({"name": "bert", "vocab_path": str(ZH_VOCAB), "do_lower_case": False})
    assert cfg.do_lower_case is False and cfg.strip_accents is None


# ---------------------------------------------------------------------------------------------------------------- bert
def test_bert_splits_chinese_characters(bert_zh):
    assert bert_zh.tokenize("我爱北京天安门") == list("我爱北京天安门")
    tokens = bert_zh.tokenize("中文English混合2024年")
    assert tokens[:3] == ["中", "文", "english"] and tokens[3:5] == ["混", "合"] and tokens[-1] == "年"
    ids = bert_zh.encode("我爱北京")
    assert ids == [bert_zh.vocab.token_to_id(c) for c in "我爱北京"]
    assert bert_zh.decode(ids) == list("我爱北京")


def test_bert_lowercases_and_strips_accents(bert_en):
    assert bert_en.tokenize("Héllo WÖRLD, naïve Café!") == ["hello", "world", ",", "naive", "cafe", "!"]
    assert bert_en.fingerprint["do_lower_case"] is True and bert_en.fingerprint["strip_accents"] is True


def test_bert_cased_keeps_case_and_accents(en_vocab):
    tok = BertTokenizer(en_vocab, do_lower_case=False)
    assert tok._tok.normalizer.normalize_str("Café Ünï") == "Café Ünï"
    assert tok.tokenize("Hello") == [UNK]  # the uncased vocab has no capitals
    assert BertTokenizer(en_vocab, do_lower_case=True, strip_accents=False)._tok.normalizer.normalize_str(
        "Café"
    ) == "café"


def test_bert_wordpieces_and_unknown(bert_en):
    assert bert_en.tokenize("unaffable") == ["una", "##ffa", "##ble"]
    assert bert_en.tokenize("x" * 101) == [UNK]  # max_input_chars_per_word=100
    assert bert_en.tokenize("hello \U0001f9ea") == ["hello", UNK]
    assert bert_en.encode("\U0001f9ea") == [bert_en.vocab.unk_id]


def test_bert_keeps_special_tokens_whole_and_adds_none(bert_en):
    assert bert_en.tokenize("hello [MASK] world [SEP]x") == ["hello", MASK, "world", SEP, "x"]
    ids = bert_en.encode("hello world")
    assert bert_en.vocab.cls_id not in ids and bert_en.vocab.sep_id not in ids


def test_bert_agrees_with_transformers_slow_tokenizer(zh_vocab):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    try:
        from tokenizer_agreement import compare
    finally:
        sys.path.pop(0)
    with open(CORPUS, encoding="utf-8") as f:
        lines = [next(f).rstrip("\n") for _ in range(300)]
    mismatches = compare(lines, str(ZH_VOCAB), do_lower_case=True)
    assert mismatches == []


# Characters around the vectorised path's boundaries: CJK (compatibility forms too), punctuation, combining marks
# that compose with the character before them under NFC, control characters between the two, special tokens written
# in the text, lone surrogates, Greek final sigma, full-width forms.
FUZZ_ALPHABET = list(
    "中文字，。！？、（）[]MASK abcXYZ123١٢\t\n\r\x00\x01\ufffd\u0301\u0338=<>éÉΣσςİıﬁ①Ａａ\u3000\u00a0\u200b\ud800"
    "豈\U00020000\U0002F800가\u1100\u1161한\u0e01\u0e31"
) + ["[MASK]", "[UNK]", "[SEP]", "##", "ing", "un", "aff", "able"]


@pytest.mark.parametrize("lower", [True, False], ids=["uncased", "cased"])
def test_bert_vectorised_path_equals_compiled_pipeline(zh_vocab, lower):
    import random

    tok = BertTokenizer(zh_vocab, do_lower_case=lower)
    rng = random.Random(0)
    fuzz = ["".join(rng.choice(FUZZ_ALPHABET) for _ in range(rng.randint(0, 30))) for _ in range(5000)]
    corpus = CORPUS.read_text(encoding="utf-8").splitlines()
    for texts in (corpus, fuzz):
        assert tok.encode_batch(texts) == tok._hf_encode_batch(texts)
    ids, offsets = tok.encode_flat(corpus)
    assert ids.dtype == np.int32 and offsets[-1] == len(ids) and len(offsets) == len(corpus) + 1


def test_char_vectorised_path_equals_tokenize(small_vocab_file):
    import random

    tok = CharTokenizer.from_config(CharTokenizer.Config(name="char", vocab_path=small_vocab_file))
    rng = random.Random(0)
    texts = ["".join(rng.choice(FUZZ_ALPHABET + list("ab \u2028\x85")) for _ in range(rng.randint(0, 20))) for _ in range(2000)]
    assert tok.encode_batch(texts) == [[tok.vocab.token_to_id(t) for t in tok.tokenize(x)] for x in texts]


# ----------------------------------------------------------------------------------------------------------------- spm
def test_spm_encode_equals_sentencepiece(spm_tok):
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(SPM_MODEL))
    with open(CORPUS, encoding="utf-8") as f:
        lines = [next(f).rstrip("\n") for _ in range(20)] + ["Hello World 你好", "", "☃ 𠀀"]
    assert spm_tok.encode_batch(lines) == sp.encode(lines, out_type=int)
    for line in lines[:5]:
        assert spm_tok.encode(line) == sp.encode(line, out_type=int)
        assert spm_tok.tokenize(line) == spm_tok.decode(spm_tok.encode(line))
    assert spm_tok.vocab.tokens[:5] == list(SPECIAL_TOKENS)


def test_spm_lower_case():
    tok = SpmTokenizer(SPM_MODEL, do_lower_case=True)
    assert tok.encode("HELLO World") == SpmTokenizer(SPM_MODEL).encode("hello world")
    assert tok.fingerprint["tokenizer"] == "spm" and len(tok.fingerprint["spm_model_sha256"]) == 64


# ------------------------------------------------------------------------------------------------------- char / space
def test_char_tokenizer(small_vocab_file):
    tok = build_tokenizer(CharTokenizer.Config(name="char", vocab_path=small_vocab_file))
    assert isinstance(tok, CharTokenizer)
    assert tok.tokenize("ab \t中\nz") == ["a", "b", "中", UNK]
    assert tok.encode("ab中z") == [tok.vocab.token_to_id(t) for t in "ab中"] + [tok.vocab.unk_id]
    assert tok.fingerprint == {"tokenizer": "char", "vocab_sha256": tok.vocab.sha256, "vocab_size": len(tok.vocab)}


def test_space_tokenizer(small_vocab_file):
    tok = build_tokenizer(SpaceTokenizer.Config(name="space", vocab_path=small_vocab_file))
    assert tok.tokenize("  hello world\tfoo\n a ") == ["hello", "world", UNK, "a"]
    assert tok.decode(tok.encode("hello foo")) == ["hello", UNK]


# --------------------------------------------------------------------------------------------------------- all of them
@pytest.fixture()
def all_tokenizers(bert_zh, bert_en, spm_tok, small_vocab_file) -> list[Tokenizer]:
    return [
        bert_zh,
        bert_en,
        spm_tok,
        CharTokenizer(Vocab.load(small_vocab_file)),
        SpaceTokenizer(Vocab.load(small_vocab_file)),
    ]


def test_odd_input_never_raises(all_tokenizers):
    for tok in all_tokenizers:
        for text in BLANK_INPUTS:
            assert tok.tokenize(text) == [], (type(tok).__name__, repr(text))
            assert tok.encode(text) == []
        assert tok.encode_batch([]) == []
        assert tok.encode_batch(BLANK_INPUTS) == [[] for _ in BLANK_INPUTS]
        # control characters, lone surrogates...: no exception, and the batch path agrees with the single one
        assert tok.encode_batch(ODD_INPUTS) == [tok.encode(t) for t in ODD_INPUTS]
        for text in ODD_INPUTS:
            assert tok.decode(tok.encode(text)) == tok.tokenize(text)
            if isinstance(tok, BertTokenizer) and text[0] in "\u2028\x00\u200b\ufffd\x7f\udcff":
                assert tok.tokenize(text) == []  # BERT's clean_text drops control / format characters
        with pytest.raises(TypeError):
            tok.tokenize(b"bytes")  # type: ignore[arg-type]


def test_encode_batch_tokenize_decode_consistent(all_tokenizers):
    texts = ["Hello world 你好，世界！", "hello a b 中", "unaffable café", "ab中z"]
    for tok in all_tokenizers:
        batch = tok.encode_batch(texts)
        assert batch == [tok.encode(t) for t in texts]
        for text, ids in zip(texts, batch):
            assert tok.decode(ids) == tok.tokenize(text)
            assert ids == [tok.vocab.token_to_id(t) for t in tok.tokenize(text)]
        fp = tok.fingerprint
        assert fp["tokenizer"] == tok.registry_name and fp["vocab_sha256"] == tok.vocab.sha256

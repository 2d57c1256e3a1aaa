"""Vocabularies from a corpus: char/word counts with Ray Data, SentencePiece training."""
from __future__ import annotations

from tests.data.conftest import head_lines
from uer_ray.data.vocab_builder import build_vocab_from_corpus, train_spm
from uer_ray.tokenizers import SPECIAL_TOKENS, CharTokenizer, SpmTokenizer, Vocab


def test_build_char_vocab(ray_session, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("aab\nb a c\n\nAd\n")
    vocab = build_vocab_from_corpus([str(corpus)], tmp_path / "vocab.txt", mode="char", min_count=2)
    assert vocab.tokens == [*SPECIAL_TOKENS, "a", "b", "##a", "##b"]  # a: 4 (lower-cased A), b: 3; c, d < 2
    words = build_vocab_from_corpus(str(corpus), tmp_path / "w.txt", mode="word", wordpiece_suffixes=False,
                                    max_size=7, lowercase=False)
    assert words.tokens == [*SPECIAL_TOKENS, "Ad", "a"]
    assert CharTokenizer(Vocab.load(tmp_path / "vocab.txt")).tokenize("abz") == ["a", "b", "[UNK]"]


def test_build_vocab_on_reference_corpus(ray_session, data_dir, tmp_path):
    corpus = head_lines(data_dir / "corpora" / "chnsenticorp.txt", tmp_path / "c.txt", 2000)
    vocab = build_vocab_from_corpus([str(corpus)], tmp_path / "v.txt", min_count=3, max_size=1000, chunk_mb=0.1)
    assert len(vocab) == 999 and vocab.tokens[:5] == list(SPECIAL_TOKENS)
    assert "的" in vocab and "##的" in vocab


def test_train_spm(data_dir, tmp_path):
    corpus = head_lines(data_dir / "corpora" / "chnsenticorp.txt", tmp_path / "c.txt", 3000)
    model = train_spm([str(corpus)], tmp_path / "spm" / "m", vocab_size=3000, sample_lines_count=2000, character_coverage=0.99)
    tok = SpmTokenizer(model)
    assert tok.vocab.tokens[:5] == list(SPECIAL_TOKENS)
    assert 1000 < len(tok.vocab) <= 3000
    ids = tok.encode("这本书很好看")
    assert ids and all(i > 4 for i in ids)

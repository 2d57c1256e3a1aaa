"""Session fixtures for the model tests: a char vocabulary from the reference corpora, each processor's instances."""
from __future__ import annotations

import pytest

from model_fixtures import make_corpus_vocab, make_tables


@pytest.fixture(scope="session")
def corpus_vocab():
    return make_corpus_vocab()


@pytest.fixture(scope="session")
def tables(corpus_vocab):
    return make_tables(corpus_vocab)

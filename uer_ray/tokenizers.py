"""Tokenizers and vocabularies (UER-py's ``char`` / ``space`` / ``bert`` / ``spm`` tokenizers).

A tokenizer is built from its pydantic ``Config`` in every Ray actor that needs one (``build_tokenizer(cfg)``); they
are cheap to construct and need not be picklable.  ``bert`` is Google BERT's BasicTokenizer + WordPiece, run by the
compiled Hugging Face ``tokenizers`` library; it agrees token-for-token with transformers' pure-Python BERT tokenizer
(see ``bench/tokenizer_agreement.py``).  ``spm`` wraps a SentencePiece model.

Every tokenizer returns only tokens of its vocab from ``tokenize`` (unknown pieces become ``[UNK]``), so that
``encode(text) == [vocab.token_to_id(t) for t in tokenize(text)]`` and ``decode(encode(text)) == tokenize(text)``.
No tokenizer adds ``[CLS]``/``[SEP]`` itself: the data processors do.
"""
from __future__ import annotations

import collections
import functools
import hashlib
import itertools
import os
import re
import unicodedata
from functools import cached_property
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np
import sentencepiece
from tokenizers import AddedToken
from tokenizers import Tokenizer as _HFTokenizer
from tokenizers import models as _hf_models
from tokenizers import normalizers as _hf_normalizers
from tokenizers import pre_tokenizers as _hf_pre_tokenizers

from uer_ray.config import ComponentConfig, InputLocation
from uer_ray.registry import TOKENIZERS
from uer_ray.storage import local_path

PAD = "[PAD]"
UNK = "[UNK]"
CLS = "[CLS]"
SEP = "[SEP]"
MASK = "[MASK]"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, CLS, SEP, MASK)

__all__ = [
    "PAD", "UNK", "CLS", "SEP", "MASK", "SPECIAL_TOKENS",
    "Vocab", "build_vocab", "Tokenizer", "CharTokenizer", "SpaceTokenizer", "BertTokenizer", "SpmTokenizer",
    "build_tokenizer",
]


# --------------------------------------------------------------------------------------------------------------------
# Vocab
# --------------------------------------------------------------------------------------------------------------------
class Vocab:
    """An ordered token list (index = id) that must contain the five special tokens.

    Duplicated tokens keep their first id (the later index still exists and decodes to the token).
    """

    def __init__(self, tokens: Iterable[str], source: str = "<tokens>"):
        self._tokens: list[str] = list(tokens)
        self._ids: dict[str, int] = {}
        for i, tok in enumerate(self._tokens):
            if not isinstance(tok, str):
                raise TypeError(f"vocab {source}: token #{i} is {type(tok).__name__}, not str")
            self._ids.setdefault(tok, i)
        missing = [t for t in SPECIAL_TOKENS if t not in self._ids]
        if missing:
            raise ValueError(f"vocab {source} lacks the special token(s) {', '.join(missing)}")
        self.source = source
        self._pad_id = self._ids[PAD]
        self._unk_id = self._ids[UNK]
        self._cls_id = self._ids[CLS]
        self._sep_id = self._ids[SEP]
        self._mask_id = self._ids[MASK]

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocab":
        """Read a BERT-format vocab file: one token per line, UTF-8, only the line ending stripped."""
        # Universal-newline text mode + rstrip("\n"), exactly as BERT / transformers read vocab files.
        with open(path, "r", encoding="utf-8") as f:
            tokens = [line.rstrip("\n") for line in f]
        return cls(tokens, source=str(path))

    def save(self, path: str | os.PathLike) -> None:
        bad = [t for t in self._tokens if "\n" in t or "\r" in t]
        if bad:
            raise ValueError(f"cannot save vocab to {path}: token(s) contain a line break: {bad[:5]!r}")
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            for tok in self._tokens:
                f.write(tok + "\n")

    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self._tokens == other._tokens

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)}, source={self.source!r})"

    def token_to_id(self, token: str) -> int:
        return self._ids.get(token, self._unk_id)

    def id_to_token(self, i: int) -> str:
        i = int(i)
        if not 0 <= i < len(self._tokens):
            raise IndexError(f"token id {i} out of range for a vocab of size {len(self._tokens)}")
        return self._tokens[i]

    @property
    def tokens(self) -> list[str]:
        return list(self._tokens)

    @property
    def token_ids(self) -> Mapping[str, int]:
        """token -> (first) id; read-only view, do not mutate."""
        return self._ids

    @property
    def pad_id(self) -> int:
        return self._pad_id

    @property
    def unk_id(self) -> int:
        return self._unk_id

    @property
    def cls_id(self) -> int:
        return self._cls_id

    @property
    def sep_id(self) -> int:
        return self._sep_id

    @property
    def mask_id(self) -> int:
        return self._mask_id

    @cached_property
    def sha256(self) -> str:
        """Hex digest of the tokens joined by "\\n": data and model must carry the same one."""
        return hashlib.sha256("\n".join(self._tokens).encode("utf-8")).hexdigest()


def build_vocab(
    token_counts: Mapping[str, int] | collections.Counter, min_count: int = 1, max_size: int | None = None
) -> Vocab:
    """Specials first ([PAD] [UNK] [CLS] [SEP] [MASK]), then tokens by descending count, ties lexicographically.

    Tokens with count < min_count are dropped; max_size (if given) bounds the whole vocab, specials included.
    """
    if max_size is not None and max_size < len(SPECIAL_TOKENS):
        raise ValueError(f"max_size={max_size} is smaller than the {len(SPECIAL_TOKENS)} special tokens")
    items = [(tok, int(c)) for tok, c in token_counts.items() if c >= min_count and tok not in SPECIAL_TOKENS]
    items.sort(key=lambda kv: (-kv[1], kv[0]))
    tokens = list(SPECIAL_TOKENS) + [tok for tok, _ in items]
    if max_size is not None:
        tokens = tokens[:max_size]
    return Vocab(tokens, source="<build_vocab>")


def _file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------------------------------
class Tokenizer:
    """Base class.  Subclasses implement ``tokenize`` (and may override ``encode``/``encode_batch``)."""

    registry_name: str  # set by @TOKENIZERS.register

    def __init__(self, vocab: Vocab):
        self.vocab = vocab

    @classmethod
    def from_config(cls, cfg: ComponentConfig) -> "Tokenizer":
        raise NotImplementedError

    def tokenize(self, text: str) -> list[str]:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        ids = self.vocab.token_ids
        unk = self.vocab.unk_id
        return [ids.get(t, unk) for t in self.tokenize(text)]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.vocab.id_to_token(i) for i in ids]

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def _options(self) -> dict[str, Any]:
        """Options that change the output (paths excluded: they differ between machines)."""
        return {}

    @property
    def fingerprint(self) -> dict[str, Any]:
        return {
            "tokenizer": getattr(type(self), "registry_name", type(self).__name__),
            "vocab_sha256": self.vocab.sha256,
            "vocab_size": len(self.vocab),
            **self._options(),
        }

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self._options().items())
        return f"{type(self).__name__}(vocab_size={len(self.vocab)}{', ' if opts else ''}{opts})"


def _check_text(text: object) -> str:
    if not isinstance(text, str):
        raise TypeError(f"tokenizers take str, got {type(text).__name__}")
    return text


_SURROGATES = re.compile("[\ud800-\udfff]")


def _drop_surrogates(texts: list[str]) -> list[str]:
    """Lone surrogates (e.g. from surrogateescape decoding) cannot cross into Rust/C++; BERT drops them anyway
    (category Cs counts as a control character), so they are removed.  Only called after the fast path failed."""
    return [_SURROGATES.sub("", t) for t in texts]


def flatten_rows(rows: Sequence[Sequence[int]], dtype=np.int32) -> tuple[np.ndarray, np.ndarray]:
    """Ragged int lists -> (values, int64 offsets: row ``i`` is ``values[offsets[i]:offsets[i + 1]]``)."""
    offsets = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, rows), np.int64, len(rows)), out=offsets[1:])
    return np.fromiter(itertools.chain.from_iterable(rows), dtype, int(offsets[-1])), offsets


def split_rows(ids: np.ndarray, offsets: np.ndarray) -> list[list[int]]:
    """The inverse of :func:`flatten_rows`."""
    flat = ids.tolist()
    bounds = offsets.tolist()
    return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _codepoints(texts: Sequence[str]) -> tuple[str, np.ndarray, np.ndarray]:
    """Texts joined by "\\n", that string's code points (lone surrogates kept as code points) and each text's start
    in it (``len(texts) + 1`` entries; the last is the end + 1)."""
    texts = [_check_text(t) for t in texts]
    joined = "\n".join(texts)
    cp = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), np.uint32)
    starts = np.zeros(len(texts) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, texts), np.int64, len(texts)) + 1, out=starts[1:])
    return joined, cp, starts


def _per_text_offsets(positions: np.ndarray, counts: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Offsets of the tokens per text, given each token group's position in the joined string and its size."""
    text_of = np.searchsorted(starts, positions, side="right") - 1
    per_text = np.bincount(text_of, weights=counts, minlength=len(starts) - 1)
    offsets = np.zeros(len(starts), np.int64)
    np.cumsum(per_text.astype(np.int64), out=offsets[1:])
    return offsets


_UNICODE_SIZE = 0x110000


@functools.lru_cache(maxsize=None)
def _whitespace_table() -> np.ndarray:
    """``str.isspace`` for every code point (all of them lie below U+3001)."""
    table = np.zeros(_UNICODE_SIZE, bool)
    table[[c for c in range(0x3001) if chr(c).isspace()]] = True
    return table


def _char_id_table(vocab: Vocab) -> np.ndarray:
    """Code point -> id of the one-character token, [UNK] where the vocab has none."""
    table = np.full(_UNICODE_SIZE, vocab.unk_id, np.int32)
    for token, i in vocab.token_ids.items():
        if len(token) == 1:
            table[ord(token)] = i
    return table


@TOKENIZERS.register("char")
class CharTokenizer(Tokenizer):
    """Every non-whitespace character is a token; characters not in the vocab become [UNK]."""

    class Config(ComponentConfig):
        name: Literal["char"] = "char"
        vocab_path: InputLocation

    @classmethod
    def from_config(cls, cfg: "CharTokenizer.Config") -> "CharTokenizer":
        return cls(Vocab.load(local_path(cfg.vocab_path)))

    def tokenize(self, text: str) -> list[str]:
        ids = self.vocab.token_ids
        return [c if c in ids else UNK for c in _check_text(text) if not c.isspace()]

    @cached_property
    def _ids_by_codepoint(self) -> np.ndarray:
        return _char_id_table(self.vocab)

    def encode_flat(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """All texts at once: int32 ids and the offsets of each text's ids (see :func:`flatten_rows`)."""
        _, cp, starts = _codepoints(texts)
        positions = np.flatnonzero(~_whitespace_table()[cp])
        ids = self._ids_by_codepoint[cp[positions]]
        return ids, _per_text_offsets(positions, np.ones(len(positions)), starts)

    def encode_batch(self, texts):
        return split_rows(*self.encode_flat(texts))


@TOKENIZERS.register("space")
class SpaceTokenizer(Tokenizer):
    """Whitespace-separated tokens (str.split()); tokens not in the vocab become [UNK]."""

    class Config(ComponentConfig):
        name: Literal["space"] = "space"
        vocab_path: InputLocation

    @classmethod
    def from_config(cls, cfg: "SpaceTokenizer.Config") -> "SpaceTokenizer":
        return cls(Vocab.load(local_path(cfg.vocab_path)))

    def tokenize(self, text: str) -> list[str]:
        ids = self.vocab.token_ids
        return [t if t in ids else UNK for t in _check_text(text).split()]


@TOKENIZERS.register("bert")
class BertTokenizer(Tokenizer):
    """Google BERT BasicTokenizer + WordPiece on the compiled Hugging Face ``tokenizers`` library.

    The five special tokens written literally in the text stay whole (as transformers' BERT tokenizers do).
    """

    class Config(ComponentConfig):
        name: Literal["bert"] = "bert"
        vocab_path: InputLocation
        do_lower_case: bool = True
        strip_accents: bool | None = None  # None: same as do_lower_case (original BERT)

    def __init__(self, vocab: Vocab, do_lower_case: bool = True, strip_accents: bool | None = None):
        super().__init__(vocab)
        self.do_lower_case = bool(do_lower_case)
        self.strip_accents = self.do_lower_case if strip_accents is None else bool(strip_accents)
        tok = _HFTokenizer(
            _hf_models.WordPiece(dict(vocab.token_ids), unk_token=UNK, max_input_chars_per_word=100)
        )
        tok.normalizer = _bert_normalizer(self.do_lower_case, self.strip_accents)
        tok.pre_tokenizer = _hf_pre_tokenizers.BertPreTokenizer()
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
        self._tok = tok

    @classmethod
    def from_config(cls, cfg: "BertTokenizer.Config") -> "BertTokenizer":
        return cls(Vocab.load(local_path(cfg.vocab_path)), do_lower_case=cfg.do_lower_case, strip_accents=cfg.strip_accents)

    def _options(self) -> dict[str, Any]:
        return {"do_lower_case": self.do_lower_case, "strip_accents": self.strip_accents}

    def _hf_encode_batch(self, texts: list[str]) -> list[list[int]]:
        """The whole text through the compiled pipeline (``encode_batch_fast``: no offsets, same ids)."""
        try:
            encodings = self._tok.encode_batch_fast(texts, add_special_tokens=False)
        except (TypeError, UnicodeError):
            encodings = self._tok.encode_batch_fast(_drop_surrogates(texts), add_special_tokens=False)
        return [e.ids for e in encodings]

    @cached_property
    def _single_char_words(self) -> tuple[np.ndarray, np.ndarray]:
        return _bert_kinds(self.do_lower_case, self.strip_accents), _char_id_table(self.vocab)

    def encode_flat(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised BERT tokenization, token-for-token the same as the compiled pipeline.

        A CJK character or a punctuation mark that normalisation leaves unchanged is always a word of its own
        (BERT spaces out CJK characters and splits punctuation off), so its id is one table lookup; ASCII whitespace
        only separates words. Only the runs of other characters (Latin words, digits, ...) go through the compiled
        pipeline, each on its own, which gives the same tokens since a word never spans those boundaries. On Chinese
        text this is ~7x faster than running the compiled pipeline on everything. Returns int32 ids and the offsets of
        each text's ids (see :func:`flatten_rows`).
        """
        kind, ids_by_codepoint = self._single_char_words
        joined, cp, starts = _codepoints(texts)
        kinds = kind[cp]
        single = kinds == _SINGLE
        other = kinds == _OTHER
        # NFC may compose a character with a combining mark after it (control characters between the two are deleted
        # first): a single-character word followed by any other character stays with the compiled path.
        single[:-1] &= ~other[1:]
        other = ~single & (kinds != _SPACE)
        edges = np.diff(other.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
        run_starts, run_ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        runs = [joined[a:b] for a, b in zip(run_starts.tolist(), run_ends.tolist())]
        unique = list(dict.fromkeys(runs))
        by_run = dict(zip(unique, self._hf_encode_batch(unique)))
        run_ids, run_offsets = flatten_rows([by_run[r] for r in runs])
        run_counts = np.diff(run_offsets)
        # Token groups in text order: one token per single-character word, run_counts[i] for run i.
        group = single.copy()
        group[run_starts] = True
        positions = np.flatnonzero(group)
        is_run = ~single[positions]
        counts = np.ones(len(positions), np.int64)
        counts[is_run] = run_counts
        group_offsets = np.zeros(len(positions) + 1, np.int64)
        np.cumsum(counts, out=group_offsets[1:])
        ids = np.empty(int(group_offsets[-1]), np.int32)
        ids[group_offsets[:-1][~is_run]] = ids_by_codepoint[cp[positions[~is_run]]]
        ids[np.repeat(group_offsets[:-1][is_run] - run_offsets[:-1], run_counts) + np.arange(len(run_ids))] = run_ids
        return ids, _per_text_offsets(positions, counts, starts)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return split_rows(*self.encode_flat(texts))

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def tokenize(self, text: str) -> list[str]:
        return self.decode(self.encode(text))


_OTHER, _SINGLE, _SPACE = 0, 1, 2
# BERT's _is_chinese_char ranges
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
               (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def _bert_normalizer(lower: bool, strip_accents: bool):
    # BERT's BasicTokenizer order as transformers runs it: clean text, space out CJK characters, NFC (e.g. CJK
    # compatibility ideographs -> unified ones), then lower-case / strip accents.  A single BertNormalizer lacks
    # the NFC step and disagrees on cased text with NFC-changed characters; hence this three-step sequence.
    return _hf_normalizers.Sequence(
        [
            _hf_normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False),
            _hf_normalizers.NFC(),
            _hf_normalizers.BertNormalizer(
                clean_text=False, handle_chinese_chars=False, strip_accents=strip_accents, lowercase=lower
            ),
        ]
    )


@functools.lru_cache(maxsize=4)
def _bert_kinds(lower: bool, strip_accents: bool) -> np.ndarray:
    """Per code point: _SINGLE (a one-character word whatever its neighbours, unchanged by normalisation), _SPACE
    (ASCII whitespace) or _OTHER. '[' and ']' stay _OTHER so that special tokens written in the text stay whole."""
    candidates = [c for lo, hi in _CJK_RANGES for c in range(lo, hi + 1)]
    candidates += [c for c in range(0x20000) if unicodedata.category(chr(c)).startswith("P")]  # none above
    candidates += list(range(33, 48)) + list(range(58, 65)) + list(range(91, 97)) + list(range(123, 127))
    normalizer = _bert_normalizer(lower, strip_accents)
    kinds = np.full(_UNICODE_SIZE, _OTHER, np.uint8)
    for c in set(candidates) - {ord("["), ord("]")}:
        char = chr(c)
        if not unicodedata.category(char).startswith("C") and normalizer.normalize_str(char).strip() == char:
            kinds[c] = _SINGLE
    kinds[[ord(c) for c in " \t\n\r"]] = _SPACE
    return kinds


@TOKENIZERS.register("spm")
class SpmTokenizer(Tokenizer):
    """A SentencePiece model.  Vocab = the model's pieces in id order, plus any missing special token appended."""

    class Config(ComponentConfig):
        name: Literal["spm"] = "spm"
        spm_model_path: InputLocation
        do_lower_case: bool = False

    def __init__(self, spm_model_path: str | os.PathLike, do_lower_case: bool = False):
        self.spm_model_path = str(spm_model_path)
        self.do_lower_case = bool(do_lower_case)
        sp = sentencepiece.SentencePieceProcessor()
        sp.Load(self.spm_model_path)
        self._sp = sp
        pieces = [sp.IdToPiece(i) for i in range(sp.GetPieceSize())]
        present = set(pieces)
        pieces += [t for t in SPECIAL_TOKENS if t not in present]
        super().__init__(Vocab(pieces, source=self.spm_model_path))
        # sentencepiece's own unknown id (its unk piece may be e.g. "<unk>") is remapped to our [UNK].
        self._sp_unk_id = sp.unk_id()
        self._model_sha256 = _file_sha256(self.spm_model_path)

    @classmethod
    def from_config(cls, cfg: "SpmTokenizer.Config") -> "SpmTokenizer":
        return cls(local_path(cfg.spm_model_path), do_lower_case=cfg.do_lower_case)

    def _options(self) -> dict[str, Any]:
        return {"do_lower_case": self.do_lower_case, "spm_model_sha256": self._model_sha256}

    def _fix_unk(self, ids: list[int]) -> list[int]:
        sp_unk, unk = self._sp_unk_id, self.vocab.unk_id
        if sp_unk == unk or sp_unk < 0:
            return ids
        return [unk if i == sp_unk else i for i in ids]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        texts = [_check_text(t) for t in texts]
        if self.do_lower_case:
            texts = [t.lower() for t in texts]
        if not texts:
            return []
        try:
            batch = self._sp.encode(texts, out_type=int)
        except (RuntimeError, TypeError, UnicodeError):  # lone surrogates cannot be cast to C++ strings
            batch = self._sp.encode(_drop_surrogates(texts), out_type=int)
        return [self._fix_unk(ids) for ids in batch]

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def tokenize(self, text: str) -> list[str]:
        return self.decode(self.encode(text))


def build_tokenizer(cfg: ComponentConfig) -> Tokenizer:
    """The tokenizer that ``cfg`` (a registered tokenizer's ``Config``) describes."""
    return TOKENIZERS.get(cfg.name).from_config(cfg)

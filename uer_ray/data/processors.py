"""Data processors: corpus documents -> training instances (columns of a Parquet shard), one per target family.

A processor declares the corpus ``layout`` it reads and the targets it ``feeds``; the config check refuses a target
that the chosen processor cannot feed. Columns: ``src``/``seg`` (list<int32>; segment 1 = first sentence, 2 = second)
plus the targets' label columns:

=============  ===========================  ===========================================================================
processor      feeds                        columns
=============  ===========================  ===========================================================================
bert           mlm, sp                      src, seg, tgt_sp (1 = random next sentence) [, tgt_mlm | word_start]
albert         mlm, sp, sop                 src, seg, tgt_sp (1 = the two segments swapped) [, tgt_mlm | word_start]
mlm            mlm                          src, seg (packed) [, tgt_mlm | word_start]
lm             lm                           src, seg (packed causal LM; the target shifts src for labels)
bilm           bilm                         src, seg (packed)
ae             ae                           src, seg (one document a row, truncated)
cls            cls                          src, seg, tgt_cls (int32) from ``label<TAB>text`` lines
mt / seq2seq   seq2seq                      src, seg, tgt_seq2seq ([CLS] target ids [SEP]) from ``source<TAB>target``
=============  ===========================  ===========================================================================

``tgt_mlm`` is written when masking is static; ``word_start`` (list<int8>, 1 where a jieba word starts) when masking
is dynamic with ``masking_strategy: whole_word``, for the training worker's masking.
"""
from __future__ import annotations

import collections
from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from uer_ray.config import ComponentConfig, Tokenizer as TokenizerField
from uer_ray.data.corpus import RepairLog
from uer_ray.data.masking import mask_tokens, word_start_flags
from uer_ray.registry import PROCESSORS
from uer_ray.tokenizers import flatten_rows

Document = list[list[int]]  # sentences of token ids

_INT8_COLUMNS = ("word_start",)
_LIST_COLUMNS = ("src", "seg", "tgt_mlm", "tgt_seq2seq")


def _list_array(rows: list[list[int]], dtype) -> pa.Array:
    """Ragged int lists -> an Arrow list array through numpy (about 9x faster than ``pa.array`` on nested lists)."""
    values, offsets = flatten_rows(rows, dtype)
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values))


def _columns_to_table(columns: dict[str, list]) -> pa.Table:
    arrays, fields = [], []
    for key, values in columns.items():
        if key in _LIST_COLUMNS or key in _INT8_COLUMNS:
            dtype = np.int8 if key in _INT8_COLUMNS else np.int32
            array = _list_array(values, dtype)
        else:
            array = pa.array(np.asarray(values, dtype=np.int32), pa.int32())
        arrays.append(array)
        fields.append(pa.field(key, array.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


SLICE_CHARS = 1 << 19


def _slices(docs: list[list[str]], max_chars: int):
    """(start, end) ranges of consecutive documents of about ``max_chars`` characters each."""
    start = size = 0
    for i, doc in enumerate(docs):
        size += sum(map(len, doc))
        if size >= max_chars:
            yield start, i + 1
            start, size = i + 1, 0
    if start < len(docs):
        yield start, len(docs)


class Processor:
    layout: str = "line"
    feeds: tuple[str, ...] = ()
    masks: bool = False  # whether this processor's instances are masked (static masking / word_start)

    class Config(ComponentConfig):
        seq_length: int = Field(128, ge=8)
        dup_factor: int = Field(1, ge=1)  # passes over the corpus with different randomness

    def __init__(self, cfg, vocab):
        self.cfg = cfg
        self.vocab = vocab
        self.specials = np.array([vocab.pad_id, vocab.unk_id, vocab.cls_id, vocab.sep_id, vocab.mask_id])

    # -- text -> token ids ---------------------------------------------------------------------------------------
    def encode_docs(self, docs: list[list[str]], wheres: list[str], tokenizer, log: RepairLog) -> tuple[list, dict]:
        """Cleaned documents (lists of lines) -> tokenized documents; a line that tokenizes to nothing is counted."""
        sentences = [s for doc in docs for s in doc]
        ids = tokenizer.encode_batch(sentences)
        tokenized, cursor, tokens = [], 0, 0
        for doc, where in zip(docs, wheres):
            kept = []
            for sentence_ids in ids[cursor : cursor + len(doc)]:
                if sentence_ids:
                    kept.append(sentence_ids)
                    tokens += len(sentence_ids)
                else:
                    log.add("no_tokens", where)
            cursor += len(doc)
            if kept:
                tokenized.append(kept)
        totals = {"documents": len(tokenized), "sentences": len(sentences), "tokens": tokens,
                  "single_sentence_documents": sum(len(d) == 1 for d in tokenized)}
        return tokenized, totals

    def process(self, docs, wheres, tokenizer, rng, log) -> tuple[pa.Table, dict]:
        """Documents -> one instance table, a slice of documents at a time: token ids as Python lists take ~30x the
        text's size, so slicing bounds an actor's memory whatever the chunk size."""
        tables, totals = [], collections.Counter()
        for lo, hi in _slices(docs, SLICE_CHARS):
            tokenized, counts = self.encode_docs(docs[lo:hi], wheres[lo:hi], tokenizer, log)
            totals.update(counts)
            tables.append(self.build(tokenized, rng))
        return pa.concat_tables(tables or [self.build([], rng)]), dict(totals)

    # -- token ids -> instances ----------------------------------------------------------------------------------
    def instances(self, docs: list, rng: np.random.Generator) -> dict[str, list]:
        raise NotImplementedError

    def build(self, docs: list, rng: np.random.Generator) -> pa.Table:
        columns: dict[str, list] = {}
        for _ in range(self.cfg.dup_factor):
            for key, values in self.instances(docs, rng).items():
                columns.setdefault(key, []).extend(values)
        if not columns:
            columns = {k: [] for k in self.empty_columns()}
        columns = self.finish(columns, rng)
        return _columns_to_table(columns)

    def empty_columns(self) -> tuple[str, ...]:
        return ("src", "seg")

    def finish(self, columns: dict[str, list], rng: np.random.Generator) -> dict[str, list]:
        return columns


class MaskedProcessor(Processor):
    """A processor whose instances feed the MLM target: static or dynamic masking, token / whole-word / span."""

    masks = True

    class Config(Processor.Config):
        masking: Literal["dynamic", "static"] = "dynamic"
        mask_prob: float = Field(0.15, gt=0, lt=1)
        masking_strategy: Literal["token", "whole_word", "span"] = "token"
        span_p: float = Field(0.2, gt=0, le=1)  # geometric span length parameter (SpanBERT: 0.2)
        span_max: int = Field(10, ge=1)  # longest span

    def finish(self, columns, rng):
        if self.cfg.masking_strategy == "whole_word":
            columns["word_start"] = word_start_flags(columns["src"], self.vocab)
        if self.cfg.masking == "static":
            columns["src"], columns["tgt_mlm"] = self._static_masks(columns["src"], columns.get("word_start"), rng)
            columns.pop("word_start", None)
        return columns

    def _static_masks(self, rows: list[list[int]], word_start, rng: np.random.Generator) -> tuple[list, list]:
        if not rows:
            return [], []
        lengths = np.array([len(r) for r in rows])
        src = np.zeros((len(rows), lengths.max()), dtype=np.int64)
        valid = np.arange(src.shape[1]) < lengths[:, None]
        src[valid] = np.concatenate(rows)
        starts = None
        if word_start is not None:
            starts = np.zeros(src.shape, dtype=np.int8)
            starts[valid] = np.concatenate(word_start)
        maskable = valid & ~np.isin(src, self.specials)
        masked, labels = mask_tokens(
            src, maskable, self.vocab.mask_id, len(self.vocab), rng, self.cfg.mask_prob,
            strategy=self.cfg.masking_strategy, word_start=starts, span_p=self.cfg.span_p, span_max=self.cfg.span_max,
        )
        return [m[:n].tolist() for m, n in zip(masked, lengths)], [l[:n].tolist() for l, n in zip(labels, lengths)]


def _truncate_pair(a: list[int], b: list[int], max_tokens: int, rng: np.random.Generator) -> None:
    """Google BERT's rule, in closed form: one token at a time is cut from the longer side (from ``b`` on a tie), from
    its front or its back at random."""
    la, lb = len(a), len(b)
    excess = la + lb - max_tokens
    if excess <= 0:
        return
    gap = min(excess, abs(la - lb))  # the longer side first comes down to the other's length ...
    cut_a, cut_b = (gap, 0) if la > lb else (0, gap)
    rest = excess - gap  # ... then the two alternate, starting with b
    cut_a, cut_b = cut_a + rest // 2, cut_b + rest - rest // 2
    for seq, cut in ((a, cut_a), (b, cut_b)):
        if cut:
            front = int(rng.binomial(cut, 0.5))
            seq[:] = seq[front : len(seq) - (cut - front)]


class SentencePairProcessor(MaskedProcessor):
    """Two segments a row, [CLS] a [SEP] b [SEP], cut from documents of one sentence a line (BERT's
    create_pretraining_data): each instance fills a target length, shorter with probability ``short_seq_prob``."""

    layout = "paragraph"

    class Config(MaskedProcessor.Config):
        short_seq_prob: float = Field(0.1, ge=0, le=1)

    def empty_columns(self):
        return ("src", "seg", "tgt_sp")

    def target_length(self, rng: np.random.Generator) -> int:
        max_tokens = self.cfg.seq_length - 3
        return max_tokens if rng.random() >= self.cfg.short_seq_prob else int(rng.integers(2, max_tokens + 1))

    def pair_row(self, tokens_a: list[int], tokens_b: list[int]) -> tuple[list[int], list[int]]:
        """(src, seg) of one instance."""
        cls, sep = self.vocab.cls_id, self.vocab.sep_id
        return [cls, *tokens_a, sep, *tokens_b, sep], [1] * (len(tokens_a) + 2) + [2] * (len(tokens_b) + 1)


@PROCESSORS.register("bert")
class BertProcessor(SentencePairProcessor):
    """Sentence pairs for MLM + next-sentence prediction (Google BERT's create_pretraining_data)."""

    feeds = ("mlm", "sp")

    def instances(self, docs, rng):
        src, seg, is_random = [], [], []
        max_tokens = self.cfg.seq_length - 3
        for doc_index, doc in enumerate(docs):
            target = self.target_length(rng)
            chunk: list[list[int]] = []
            length = 0
            i = 0
            while i < len(doc):
                chunk.append(doc[i])
                length += len(doc[i])
                if i == len(doc) - 1 or length >= target:
                    a_end = 1 if len(chunk) < 2 else int(rng.integers(1, len(chunk)))
                    tokens_a = [t for s in chunk[:a_end] for t in s]
                    random_next = len(docs) > 1 and (len(chunk) == 1 or rng.random() < 0.5)
                    if random_next:
                        other = int(rng.integers(0, len(docs) - 1))
                        other_doc = docs[other + (other >= doc_index)]
                        start = int(rng.integers(0, len(other_doc)))
                        tokens_b: list[int] = []
                        for sentence in other_doc[start:]:
                            tokens_b.extend(sentence)
                            if len(tokens_b) >= target - len(tokens_a):
                                break
                        i -= len(chunk) - a_end  # the unused sentences start the next instance
                    else:
                        tokens_b = [t for s in chunk[a_end:] for t in s]
                    if tokens_a and tokens_b:
                        _truncate_pair(tokens_a, tokens_b, max_tokens, rng)
                        row_src, row_seg = self.pair_row(tokens_a, tokens_b)
                        src.append(row_src)
                        seg.append(row_seg)
                        is_random.append(int(random_next))
                    chunk, length = [], 0
                i += 1
        return {"src": src, "seg": seg, "tgt_sp": is_random}


@PROCESSORS.register("albert")
class AlbertProcessor(SentencePairProcessor):
    """Sentence pairs for MLM + sentence-order prediction (ALBERT): both segments come from the same document, in
    order (``tgt_sp`` 0) or swapped (``tgt_sp`` 1)."""

    feeds = ("mlm", "sp", "sop")

    def instances(self, docs, rng):
        src, seg, swapped = [], [], []
        max_tokens = self.cfg.seq_length - 3
        for doc in docs:
            target = self.target_length(rng)
            chunk: list[list[int]] = []
            length = 0
            for i, sentence in enumerate(doc):
                chunk.append(sentence)
                length += len(sentence)
                if i == len(doc) - 1 or length >= target:
                    if len(chunk) >= 2:
                        a_end = int(rng.integers(1, len(chunk)))
                        tokens_a = [t for s in chunk[:a_end] for t in s]
                        tokens_b = [t for s in chunk[a_end:] for t in s]
                        swap = int(rng.random() < 0.5)
                        if swap:
                            tokens_a, tokens_b = tokens_b, tokens_a
                        _truncate_pair(tokens_a, tokens_b, max_tokens, rng)
                        if tokens_a and tokens_b:
                            row_src, row_seg = self.pair_row(tokens_a, tokens_b)
                            src.append(row_src)
                            seg.append(row_seg)
                            swapped.append(swap)
                    chunk, length = [], 0
        return {"src": src, "seg": seg, "tgt_sp": swapped}


def _pack(docs, cls: int, sep: int, seq_length: int, wrap_documents: bool) -> list[list[int]]:
    """Documents -> one token stream -> rows of seq_length.

    wrap_documents: every document becomes [CLS] doc [SEP] inside the stream (causal LM); otherwise documents are
    joined with [SEP] and each row is wrapped as [CLS] piece [SEP] (RoBERTa's full sentences).
    """
    stream: list[int] = []
    for doc in docs:
        if wrap_documents:
            stream.append(cls)
        for sentence in doc:
            stream.extend(sentence)
        stream.append(sep)
    if wrap_documents:
        return [stream[i : i + seq_length] for i in range(0, len(stream), seq_length) if len(stream[i : i + seq_length]) > 1]
    body = seq_length - 2
    return [[cls, *stream[i : i + body], sep] for i in range(0, len(stream), body) if len(stream[i : i + body]) > 1]


class PackedConfig(ComponentConfig):
    layout: Literal["line", "paragraph"] = "line"


class Packed:
    """Rows cut from the corpus read as one token stream (``_pack``), in either layout."""

    wrap_documents = False

    def __init__(self, cfg, vocab):
        super().__init__(cfg, vocab)
        self.layout = cfg.layout

    def instances(self, docs, rng):
        src = _pack(docs, self.vocab.cls_id, self.vocab.sep_id, self.cfg.seq_length, self.wrap_documents)
        return {"src": src, "seg": [[1] * len(s) for s in src]}


@PROCESSORS.register("mlm")
class MlmProcessor(Packed, MaskedProcessor):
    """Packed full sentences for MLM only (RoBERTa): documents joined with [SEP], cut into seq_length pieces."""

    feeds = ("mlm",)

    class Config(MaskedProcessor.Config, PackedConfig):
        pass


@PROCESSORS.register("lm")
class LmProcessor(Packed, Processor):
    """Packed causal LM (GPT): every document as [CLS] tokens [SEP], concatenated and cut into seq_length rows.
    Only src/seg: the lm target predicts src[t + 1] from src[..t]."""

    feeds = ("lm",)
    wrap_documents = True

    class Config(Processor.Config, PackedConfig):
        pass


@PROCESSORS.register("bilm")
class BilmProcessor(LmProcessor):
    """Packed bidirectional LM (ELMo): same rows as ``lm``; the bilm target shifts src both ways."""

    feeds = ("bilm",)


@PROCESSORS.register("ae")
class AeProcessor(Processor):
    """Autoencoder: one document a row, [CLS] tokens [SEP], cut into seq_length pieces (no packing across
    documents); the ae target reconstructs src."""

    feeds = ("ae",)

    class Config(Processor.Config):
        layout: Literal["line", "paragraph"] = "line"

    def __init__(self, cfg, vocab):
        super().__init__(cfg, vocab)
        self.layout = cfg.layout

    def instances(self, docs, rng):
        cls, sep = self.vocab.cls_id, self.vocab.sep_id
        body = self.cfg.seq_length - 2
        src = []
        for doc in docs:
            tokens = [t for s in doc for t in s]
            src.extend([cls, *tokens[i : i + body], sep] for i in range(0, len(tokens), body))
        return {"src": src, "seg": [[1] * len(s) for s in src]}


def _split_tab(text: str, where: str, log: RepairLog, kind: str) -> tuple[str, str] | None:
    if "\t" not in text:
        log.add(kind, where)
        return None
    left, right = text.split("\t", 1)
    return left.strip(), right.strip()


@PROCESSORS.register("cls")
class ClsProcessor(Processor):
    """Sentence classification: ``label<TAB>text`` lines -> [CLS] text [SEP] + int32 ``tgt_cls``.

    A line without a tab, with a non-integer label or a label outside [0, labels_num) is skipped and counted
    (``bad_label``, with its line number) in the manifest.
    """

    feeds = ("cls",)
    layout = "line"

    class Config(Processor.Config):
        labels_num: int | None = Field(None, ge=2)  # None: any label >= 0

    def empty_columns(self):
        return ("src", "seg", "tgt_cls")

    def encode_docs(self, docs, wheres, tokenizer, log):
        labels, texts, text_wheres = [], [], []
        for doc, where in zip(docs, wheres):
            parts = _split_tab(doc[0], where, log, "bad_label")
            if parts is None:
                continue
            label, text = parts
            try:
                value = int(label)
            except ValueError:
                log.add("bad_label", where)
                continue
            if value < 0 or (self.cfg.labels_num is not None and value >= self.cfg.labels_num):
                log.add("bad_label", where)
                continue
            labels.append(value)
            texts.append(text)
            text_wheres.append(where)
        ids = tokenizer.encode_batch(texts)
        kept = []
        for label, sentence_ids, where in zip(labels, ids, text_wheres):
            if sentence_ids:
                kept.append((label, sentence_ids))
            else:
                log.add("no_tokens", where)
        totals = {"documents": len(kept), "sentences": len(docs), "tokens": sum(len(s) for _, s in kept)}
        return kept, totals

    def instances(self, docs, rng):
        cls, sep = self.vocab.cls_id, self.vocab.sep_id
        body = self.cfg.seq_length - 2
        src = [[cls, *ids[:body], sep] for _, ids in docs]
        return {"src": src, "seg": [[1] * len(s) for s in src], "tgt_cls": [label for label, _ in docs]}


@PROCESSORS.register("mt")
class MtProcessor(Processor):
    """Sequence to sequence (translation, summarisation): ``source<TAB>target`` lines -> src = [CLS] source [SEP],
    ``tgt_seq2seq`` = [CLS] target [SEP] (list<int32>), the target tokenized with ``tgt_tokenizer`` when given
    (its vocabulary is saved as ``tgt_vocab.txt`` next to the shards), else with the source tokenizer."""

    feeds = ("seq2seq",)
    layout = "line"

    class Config(Processor.Config):
        tgt_seq_length: int = Field(128, ge=4)
        tgt_tokenizer: TokenizerField | None = None

    def __init__(self, cfg, vocab):
        super().__init__(cfg, vocab)
        self.tgt_tokenizer = None
        self.tgt_vocab = vocab
        if cfg.tgt_tokenizer is not None:
            from uer_ray.tokenizers import build_tokenizer

            self.tgt_tokenizer = build_tokenizer(cfg.tgt_tokenizer)
            self.tgt_vocab = self.tgt_tokenizer.vocab

    def empty_columns(self):
        return ("src", "seg", "tgt_seq2seq")

    def encode_docs(self, docs, wheres, tokenizer, log):
        sources, targets, pair_wheres = [], [], []
        for doc, where in zip(docs, wheres):
            parts = _split_tab(doc[0], where, log, "bad_pair")
            if parts is None:
                continue
            sources.append(parts[0])
            targets.append(parts[1])
            pair_wheres.append(where)
        src_ids = tokenizer.encode_batch(sources)
        tgt_ids = (self.tgt_tokenizer or tokenizer).encode_batch(targets)
        kept = []
        for s, t, where in zip(src_ids, tgt_ids, pair_wheres):
            if s and t:
                kept.append((s, t))
            else:
                log.add("no_tokens", where)
        totals = {"documents": len(kept), "sentences": len(docs), "tokens": sum(len(s) + len(t) for s, t in kept)}
        return kept, totals

    def instances(self, docs, rng):
        cls, sep = self.vocab.cls_id, self.vocab.sep_id
        tcls, tsep = self.tgt_vocab.cls_id, self.tgt_vocab.sep_id
        src = [[cls, *s[: self.cfg.seq_length - 2], sep] for s, _ in docs]
        tgt = [[tcls, *t[: self.cfg.tgt_seq_length - 2], tsep] for _, t in docs]
        return {"src": src, "seg": [[1] * len(s) for s in src], "tgt_seq2seq": tgt}


PROCESSORS.register("seq2seq")(type("Seq2seqProcessor", (MtProcessor,), {"__doc__": "Alias of ``mt``."}))

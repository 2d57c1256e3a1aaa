"""Agreement of uer_ray's `bert` tokenizer with transformers' pure-Python BERT tokenizer, line by line.

    .venv/bin/python bench/tokenizer_agreement.py [--corpus PATH] [--vocab PATH] [--cased] [--limit N]

Prints `bert tokenizer agreement: N lines, M mismatches` and then each mismatching line number (1-based) with the
first differing position.  Exit status 1 if there is any mismatch.

The reference is transformers' slow tokenizer: in transformers >= 5 `transformers.BertTokenizer` is backed by the
Rust `tokenizers` library, and the pure-Python BasicTokenizer + WordpieceTokenizer is `BertTokenizerLegacy`.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

DATA = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "uer")


def slow_bert_tokenizer(vocab_path: str, do_lower_case: bool):
    try:  # transformers >= 5
        from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy as Slow
    except ImportError:  # transformers 4.x: BertTokenizer is the pure-Python one
        from transformers import BertTokenizer as Slow
    return Slow(vocab_path, do_lower_case=do_lower_case)


def compare(lines: list[str], vocab_path: str, do_lower_case: bool) -> list[tuple[int, int, list, list]]:
    from uer_ray.tokenizers import BertTokenizer, Vocab

    ours = BertTokenizer(Vocab.load(vocab_path), do_lower_case=do_lower_case)
    ref = slow_bert_tokenizer(vocab_path, do_lower_case)
    ours_ids = ours.encode_batch(lines)
    mismatches = []
    for n, (line, ids) in enumerate(zip(lines, ours_ids), start=1):
        a = ours.tokenize(line)
        b = ref.tokenize(line)
        b_ids = ref.convert_tokens_to_ids(b)
        if a != b or ids != b_ids or ours.encode(line) != b_ids:
            pos = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            mismatches.append((n, pos, a[pos:pos + 5], b[pos:pos + 5]))
    return mismatches


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default=f"{DATA}/corpora/CLUECorpusSmall_sampled.txt")
    p.add_argument("--vocab", default=f"{DATA}/models/google_zh_vocab.txt")
    p.add_argument("--cased", action="store_true", help="do_lower_case=False")
    p.add_argument("--limit", type=int, default=None, help="first N lines only")
    args = p.parse_args(argv)

    with open(args.corpus, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f]
    if args.limit is not None:
        lines = lines[: args.limit]
    t0 = time.perf_counter()
    mismatches = compare(lines, args.vocab, do_lower_case=not args.cased)
    print(f"bert tokenizer agreement: {len(lines)} lines, {len(mismatches)} mismatches")
    for n, pos, a, b in mismatches:
        print(f"  line {n}: token {pos}: ours {a} vs reference {b}")
    print(f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())

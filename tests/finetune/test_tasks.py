"""Downstream TSV reading: malformed rows are errors naming the file and line, never silently dropped."""
from __future__ import annotations

import pytest

from uer_ray.config import build_config
from uer_ray.finetune.tasks import DataError
from uer_ray.registry import TASKS
from uer_ray.tokenizers import build_tokenizer


@pytest.fixture()
def task(data_dir):
    job = build_config({
        "tokenizer": {"name": "bert", "vocab_path": str(data_dir / "models" / "google_zh_vocab.txt")},
        "finetune": {"task": {"name": "classification", "labels_num": 2}, "seq_length": 16},
    })
    return TASKS.get("classification")(job.finetune.task, build_tokenizer(job.tokenizer), job.finetune.seq_length)


def write(tmp_path, text):
    path = tmp_path / "data.tsv"
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_single_sentences_and_pairs(task, data_dir, tmp_path):
    table = task.read(data_dir / "datasets" / "test_data" / "book_review" / "train.tsv")
    assert table.num_rows == 200 and set(table.column("label").to_pylist()) == {0, 1}
    assert max(len(s) for s in table.column("src").to_pylist()) <= 16
    pair = task.read(write(tmp_path, "label\ttext_a\ttext_b\n1\t今天天气很好\t明天也会很好，一定的\n"))
    src, seg = pair.column("src")[0].as_py(), pair.column("seg")[0].as_py()
    vocab = task.tokenizer.vocab
    assert src[0] == vocab.cls_id and src.count(vocab.sep_id) == 2 and len(src) <= 16
    assert seg == [1] * (src.index(vocab.sep_id) + 1) + [2] * (len(src) - src.index(vocab.sep_id) - 1)


@pytest.mark.parametrize(
    "text, message",
    [
        ("label\ttext_a\n1\tgood\n0\tbad\textra\n", "data.tsv:3: expected 2 tab-separated columns (label, text_a), found 3"),
        ("label\ttext_a\n1\tgood\nx\tbad\n", "data.tsv:3: label 'x' is not an integer"),
        ("label\ttext_a\n1\tgood\n2\tbad\n", "data.tsv:3: label 2 is outside 0..1"),
        ("text\tlabel\n好\t1\n", "data.tsv:1: header ['text', 'label'] lacks column(s) text_a"),
        ("", "empty file"),
    ],
)
def test_bad_rows_name_the_line(task, tmp_path, text, message):
    with pytest.raises(DataError) as error:
        task.read(write(tmp_path, text))
    assert message in str(error.value)


def test_invalid_utf8_is_an_error(task, tmp_path):
    path = tmp_path / "data.tsv"
    path.write_bytes(b"label\ttext_a\n1\t\xff\xfe bad\n")
    with pytest.raises(DataError, match="not valid UTF-8"):
        task.read(path)

"""The preprocess stage on real Ray: columns per processor, dirty input, determinism, compressed and URI inputs,
chunking, corpus-shape detection, statistics."""
from __future__ import annotations

import gzip
import json

import pyarrow.parquet as pq
import pytest
import zstandard

from tests.data.conftest import head_lines, make_job
from uer_ray.data.corpus import RepairLog, expand_paths, plan_chunks, read_chunk
from uer_ray.data.preprocess import CorpusShapeError, preprocess


def _read(out_dir):
    manifest = json.loads((out_dir / "manifest.json").read_text())
    return manifest, pq.ParquetDataset([str(out_dir / s) for s in manifest["shards"]]).read()


@pytest.fixture(scope="module")
def corpora(data_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("corpora")
    c = data_dir / "corpora"
    return {
        "paragraph": head_lines(c / "CLUECorpusSmall_bert_sampled.txt", tmp / "para.txt", 1500),
        "line": head_lines(c / "CLUECorpusSmall_sampled.txt", tmp / "line.txt", 150),
        "cls": head_lines(c / "book_review_cls.txt", tmp / "cls.txt", 500),
        "mt": head_lines(c / "news-commentary-v13-en-zh_sampled.txt", tmp / "mt.txt", 200),
    }


@pytest.mark.parametrize("name,corpus,columns", [
    ("bert", "paragraph", ["src", "seg", "tgt_sp"]),
    ("albert", "paragraph", ["src", "seg", "tgt_sp", "tgt_mlm"]),
    ("mlm", "line", ["src", "seg", "word_start"]),
    ("lm", "line", ["src", "seg"]),
    ("bilm", "line", ["src", "seg"]),
    ("ae", "line", ["src", "seg"]),
    ("cls", "cls", ["src", "seg", "tgt_cls"]),
    ("mt", "mt", ["src", "seg", "tgt_seq2seq"]),
])
def test_processor_outputs(ray_session, vocab_path, corpora, tmp_path, name, corpus, columns):
    opts = {"albert": {"masking": "static"}, "mlm": {"masking_strategy": "whole_word"}, "cls": {"labels_num": 2}}
    job = make_job(vocab_path, [corpora[corpus]], tmp_path / "out", {"name": name, "seq_length": 64,
                                                                       **opts.get(name, {})})
    manifest = preprocess(job, progress=lambda m: None)
    _, table = _read(tmp_path / "out")
    assert table.column_names == columns
    assert table.num_rows == manifest["instances"] > 0
    assert all(len(r) <= 64 for r in table.column("src").to_pylist())
    assert manifest["targets_fed"] and manifest["repairs"]["counts"] == {}
    if name == "cls":
        assert set(table.column("tgt_cls").to_pylist()) == {0, 1}


def _dirty_corpus(path):
    lines = [
        "第一个文档的第一句话。\n",
        "第二句有坏字节\xff\xfe在这里。\n".encode("utf-8", "surrogateescape") if False else None,
    ]
    body = bytearray()
    body += "正常的一行文本。\n".encode()
    body += b"\xe5\x9d\x8f\xff\xfe\xe5\xad\x97\xe8\x8a\x82\n"  # invalid UTF-8 (1)
    body += "另一行\xff".encode()[:-2] + b"\xc3\n"  # invalid UTF-8 (2)
    body += "空字符\x00在中间\x00。\n".encode()  # NUL (1)
    body += "控制\x07字符\x1b。\n".encode()  # control chars (2)
    body += "第三个\x00\n".encode()  # NUL (3)
    body += "Windows 行尾一。\r\n".encode() + "Windows 行尾二。\r\n".encode()  # CRLF (2)
    body += b"\n\n\n"  # empty documents (3)
    body += "\u200b\u200b\n".encode()  # tokenizes to nothing (1)
    body += ("中" * 1_000_000 + "\n").encode()  # 3 MB single line: 3 splits at 1 MB pieces
    body += "最后一行。\n".encode()
    path.write_bytes(bytes(body))
    del lines
    return path


def test_dirty_input_counts(ray_session, vocab_path, tmp_path):
    corpus = _dirty_corpus(tmp_path / "dirty.txt")
    job = make_job(vocab_path, [corpus], tmp_path / "out", {"name": "mlm", "seq_length": 128},
                   max_line_chars=250_000, chunk_mb=16)
    manifest = preprocess(job, progress=lambda m: None)
    counts = manifest["repairs"]["counts"]
    assert counts == {"invalid_utf8": 2, "control_chars": 3, "crlf": 2, "empty_document": 3, "no_tokens": 1,
                      "long_line_split": 3}
    examples = manifest["repairs"]["examples"]
    assert examples["invalid_utf8"] == [f"{corpus}:2", f"{corpus}:3"]
    assert examples["no_tokens"] == [f"{corpus}:12"]
    assert manifest["instances"] > 7800  # 1M characters at 126 a row


def test_bad_labels_skipped_with_line_numbers(ray_session, vocab_path, tmp_path):
    corpus = tmp_path / "labels.txt"
    corpus.write_text("1\t很好的书\n2\t越界\nx\t不是数字\n没有制表符\n0\t一般\n-1\t负数\n1\t\u200b\n")
    job = make_job(vocab_path, [corpus], tmp_path / "out", {"name": "cls", "labels_num": 2}, check_shape=False)
    manifest = preprocess(job, progress=lambda m: None)
    assert manifest["repairs"]["counts"] == {"bad_label": 4, "no_tokens": 1}
    assert manifest["repairs"]["examples"]["bad_label"] == [f"{corpus}:{i}" for i in (2, 3, 4, 6)]
    _, table = _read(tmp_path / "out")
    assert table.column("tgt_cls").to_pylist() == [1, 0]


def test_deterministic_bytes_and_actor_count(ray_session, vocab_path, corpora, tmp_path):
    """Same seed -> byte-identical shards, whatever the number of actors; more actors than the 2-CPU cluster can
    place (6 x 1 CPU) start as room allows and never hold the run up."""
    outputs = []
    for run, (actors, cpus) in enumerate(((1, 0.5), (1, 0.5), (2, 0.5), (6, 1.0))):
        job = make_job(vocab_path, [corpora["paragraph"]], tmp_path / f"out{run}",
                       {"name": "bert", "masking": "static", "dup_factor": 2}, chunk_mb=0.03, tokenize_actors=actors,
                       tokenize_cpus=cpus, row_group_rows=100)
        manifest = preprocess(job, progress=lambda m: None)
        assert manifest["chunks"] > 3 and len(manifest["shards"]) > 1
        outputs.append({s: (tmp_path / f"out{run}" / s).read_bytes() for s in manifest["shards"]})
    assert outputs[0] == outputs[1] == outputs[2] == outputs[3]


def test_compressed_and_uri_inputs(ray_session, vocab_path, corpora, tmp_path):
    raw = corpora["paragraph"].read_bytes()
    gz = tmp_path / "c.txt.gz"
    gz.write_bytes(gzip.compress(raw))
    zst = tmp_path / "c.txt.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(raw))
    results = {}
    for key, corpus in {"plain": corpora["paragraph"], "gz": gz, "zst": zst,
                        "uri": f"file://{corpora['paragraph']}"}.items():
        job = make_job(vocab_path, [corpus], tmp_path / key, {"name": "bert", "masking": "static"}, chunk_mb=0.05)
        manifest = preprocess(job, progress=lambda m: None)
        results[key] = (manifest["documents"], manifest["sentences"], manifest["chunks"])
        if key in ("gz", "zst"):
            assert manifest["chunks"] == 1
    assert results["gz"][:2] == results["zst"][:2] == results["plain"][:2] == results["uri"][:2]
    assert expand_paths([f"file://{tmp_path}/*.zst"]) == [f"file://{zst}"]


def test_chunking_keeps_documents(corpora, tmp_path):
    corrupted = tmp_path / "crlf.txt"
    corrupted.write_bytes(corpora["paragraph"].read_bytes().replace(b"\n", b"\r\n")[:200_000])
    for path, layout in ((corpora["paragraph"], "paragraph"), (corrupted, "paragraph"), (corpora["line"], "line")):
        def docs(chunk_bytes):
            out = []
            for chunk in plan_chunks([str(path)], chunk_bytes):
                out.extend(read_chunk(chunk, layout, 1 << 20, RepairLog()))
            return out
        whole = docs(1 << 30)
        assert len(whole) > 10
        for size in (37, 1000, 65_537):
            assert docs(size) == whole


def test_shape_detection(ray_session, vocab_path, data_dir, tmp_path):
    one_doc_a_line = data_dir / "corpora" / "CLUECorpusSmall_sampled.txt"
    job = make_job(vocab_path, [one_doc_a_line], tmp_path / "out", {"name": "bert"})
    with pytest.raises(CorpusShapeError, match="no blank line.*Use processor mlm"):
        preprocess(job, progress=lambda m: None)
    assert not (tmp_path / "out").exists()  # refused before any work
    single = tmp_path / "single.txt"
    single.write_text("".join(f"第{i}篇只有一句话。\n\n" for i in range(200)))
    job = make_job(vocab_path, [single], tmp_path / "out", {"name": "albert"})
    with pytest.raises(CorpusShapeError, match="200 of 200 documents have a single sentence"):
        preprocess(job, progress=lambda m: None)
    job = make_job(vocab_path, [one_doc_a_line], tmp_path / "out", {"name": "cls"})
    with pytest.raises(CorpusShapeError, match="label<TAB>text"):
        preprocess(job, progress=lambda m: None)
    messages = []
    para = head_lines(data_dir / "corpora" / "CLUECorpusSmall_bert_sampled.txt", tmp_path / "p.txt", 300)
    job = make_job(vocab_path, [para], tmp_path / "out", {"name": "mlm"})
    preprocess(job, progress=messages.append)
    assert any("layout=paragraph" in m for m in messages)
    assert any("preprocess:" in m and "starting" in m for m in messages)


def test_stats(ray_session, vocab_path, corpora, tmp_path):
    from uer_ray.data.stats import dataset_stats

    job = make_job(vocab_path, [corpora["cls"]], tmp_path / "out", {"name": "cls", "seq_length": 64})
    printed = []
    manifest = preprocess(job, progress=printed.append, stats=True)
    stats = manifest["stats"]
    assert stats["instances"] == manifest["instances"] == 500
    assert sum(stats["length_histogram"].values()) == 500
    assert 0 <= stats["unk_rate"] < 0.05
    assert sum(stats["labels"]["tgt_cls"].values()) == 500
    assert any("UNK rate" in m for m in printed)
    assert dataset_stats(tmp_path / "out", progress=lambda m: None)["tokens"] == stats["tokens"]

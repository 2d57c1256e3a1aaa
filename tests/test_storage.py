"""Storage: the same calls on a local path and on a real S3-compatible server (moto on loopback); single files are
written atomically and a published directory is switched atomically: a write that fails half-way leaves the previous
complete version in place."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cluster_harness import s3_server
from uer_ray import storage


@pytest.fixture(scope="module")
def bucket():
    with s3_server("storage-test") as server:
        saved = {key: os.environ.get(key) for key in server.env}
        os.environ.update(server.env)
        storage._filesystem_for.cache_clear()
        try:
            yield server
        finally:
            for key, value in saved.items():
                os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
            storage._filesystem_for.cache_clear()


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "store")
    server = request.getfixturevalue("bucket")
    return f"s3://{server.bucket}/{tmp_path.name}"


def test_files_round_trip(root):
    storage.write_json(storage.join(root, "a", "m.json"), {"x": 1})
    storage.write_text(storage.join(root, "a", "t.txt"), "中文\n")
    assert storage.read_json(storage.join(root, "a", "m.json")) == {"x": 1}
    assert storage.read_text(storage.join(root, "a", "t.txt")) == "中文\n"
    assert storage.list_dir(storage.join(root, "a")) == ["m.json", "t.txt"]
    assert storage.exists(storage.join(root, "a", "t.txt")) and not storage.exists(storage.join(root, "nope"))
    with pytest.raises(FileNotFoundError, match="not found"):
        storage.read_bytes(storage.join(root, "nope"))
    storage.delete(storage.join(root, "a"))
    assert storage.list_dir(root) == []


def test_parquet_is_read_in_row_groups_from_storage(root, tmp_path):
    from uer_ray.train.data_position import ParquetSource

    local = tmp_path / "p.parquet"
    pq.write_table(pa.table({"id": list(range(10))}), local, row_group_size=4)
    storage.write_bytes(storage.join(root, "p.parquet"), local.read_bytes())
    source = ParquetSource([storage.join(root, "p.parquet")])
    assert [b.rows for b in source.blocks] == [4, 4, 2]
    assert source.read_rows(3, 9).column("id").to_pylist() == [3, 4, 5, 6, 7, 8]


def model_dir(path, text):
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.safetensors").write_text(text)
    (path / "config.json").write_text("{}")
    return path


def test_publish_switches_atomically_and_keeps_the_old_version_on_a_crash(root, tmp_path):
    best = storage.join(root, "finetune", "best")
    storage.publish_dir(model_dir(tmp_path / "v1", "one"), best)
    assert storage.read_text(storage.join(storage.resolve_published(best), "model.safetensors")) == "one"
    big = model_dir(tmp_path / "v2", "two")
    for i in range(40):
        (big / f"shard-{i:02d}.bin").write_bytes(os.urandom(1 << 20))
    if not storage.is_uri(root):  # a local copy of 40 MB can end between two polls: many files make it last
        for i in range(3000):
            (big / f"part-{i:04d}.bin").write_bytes(b"x" * 512)
    writer = subprocess.Popen([sys.executable, "-c", f"from uer_ray import storage; storage.publish_dir({str(big)!r}, {best!r})"],
                              env=os.environ.copy())
    deadline = time.time() + 60
    while not any(storage.list_dir(storage.join(root, "finetune", name)) for name in _versions(root)[1:]):
        assert writer.poll() is None and time.time() < deadline, "the copy ended before it could be interrupted"
        time.sleep(0.01)
    writer.kill()  # a crash mid-write
    writer.wait()
    assert len(_versions(root)) == 2  # the half-written version is there...
    assert (storage.local_path(best) / "model.safetensors").read_text() == "one"  # ...but `best` is the old one
    storage.publish_dir(model_dir(tmp_path / "v3", "three"), best)
    assert storage.read_text(storage.join(storage.resolve_published(best), "model.safetensors")) == "three"
    assert len(_versions(root)) == 1  # older versions pruned, the half-written one too


def _versions(root) -> list[str]:
    return [n for n in storage.list_dir(storage.join(root, "finetune")) if n.startswith("best@")]


def test_relative_paths_mean_where_the_command_was_typed(tmp_path, monkeypatch):
    from uer_ray.config import build_config

    monkeypatch.chdir(tmp_path)
    job = build_config({"run": {"storage_path": "runs"}, "data": {"corpus": ["c.txt"]}})
    assert job.run_dir == str(tmp_path / "runs" / "uer-run") and job.data.corpus == [str(tmp_path / "c.txt")]
    uri = build_config({"run": {"storage_path": "s3://bucket/runs"}})
    assert uri.run_dir == "s3://bucket/runs/uer-run" and uri.dataset_dir == "s3://bucket/runs/uer-run/dataset"

"""Preprocess stage: corpus -> Ray Data (read + repair + tokenize + build instances in an actor pool) -> Parquet shards
plus ``manifest.json``.

The unit of work is a byte-range chunk of a corpus file, so memory per actor is bounded by the chunk size whatever the
corpus size, and each chunk's randomness is seeded by (seed, chunk index): the same seed gives the same instances
whatever the number of actors. The driver writes the shards in chunk order, so the output is byte-identical too.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from uer_ray.data.corpus import RepairLog, expand_paths, plan_chunks, read_chunk
from uer_ray.registry import PROCESSORS
from uer_ray.tokenizers import build_tokenizer

MANIFEST = "manifest.json"
VOCAB = "vocab.txt"


@ray.remote(num_cpus=0)
class RepairCollector:
    """Gathers each chunk's repair counts and document/line counts for the manifest."""

    def __init__(self):
        self.log = RepairLog()
        self.totals: dict[str, int] = {}

    def add(self, log: dict, totals: dict[str, int]) -> None:
        self.log.merge(RepairLog.from_dict(log))
        for key, value in totals.items():
            self.totals[key] = self.totals.get(key, 0) + value

    def summary(self) -> dict:
        return {"repairs": self.log.to_dict(), "totals": self.totals}


class InstanceBuilder:
    """Ray Data actor: loads the tokenizer once, then turns chunk descriptors into instance tables."""

    def __init__(self, job_json: str, collector):
        from uer_ray.config import JobConfig

        job = JobConfig.model_validate_json(job_json)
        self.tokenizer = build_tokenizer(job.tokenizer)
        self.processor = PROCESSORS.get(job.data.processor.name)(job.data.processor, self.tokenizer.vocab)
        self.seed = job.data.seed
        self.max_line_bytes = job.data.max_line_chars * 4  # UTF-8: at most 4 bytes a character
        self.collector = collector

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        tables = []
        for index, path, start, end in zip(batch["index"], batch["path"], batch["start"], batch["end"]):
            chunk = {"index": int(index), "path": str(path), "start": int(start), "end": int(end)}
            tables.append(self._build(chunk))
        return pa.concat_tables(tables)

    def _build(self, chunk: dict) -> pa.Table:
        log = RepairLog()
        docs = read_chunk(chunk, self.processor.layout, self.max_line_bytes, log)
        sentences = [s for doc in docs for s in doc]
        ids = self.tokenizer.encode_batch(sentences)
        tokenized, cursor, tokens = [], 0, 0
        for doc in docs:
            kept = []
            for sentence_ids in ids[cursor : cursor + len(doc)]:
                if sentence_ids:
                    kept.append(sentence_ids)
                    tokens += len(sentence_ids)
                else:
                    log.add("no_tokens", f"{chunk['path']}@chunk{chunk['index']}")
            cursor += len(doc)
            if kept:
                tokenized.append(kept)
        table = self.processor.build(tokenized, np.random.default_rng([self.seed, chunk["index"]]))
        totals = {"documents": len(tokenized), "sentences": len(sentences), "tokens": tokens}
        ray.get(self.collector.add.remote(log.to_dict(), totals))
        return table.append_column("chunk", pa.array([chunk["index"]] * table.num_rows, pa.int32()))


class ShardWriter:
    """Rolls Parquet shards at ``shard_rows`` rows; names are stable so reruns overwrite byte-for-byte."""

    def __init__(self, out_dir: Path, shard_rows: int):
        self.out_dir, self.shard_rows = out_dir, shard_rows
        self.writer: pq.ParquetWriter | None = None
        self.rows_in_shard = 0
        self.files: list[str] = []

    def write(self, table: pa.Table) -> None:
        while table.num_rows:
            if self.writer is None:
                name = f"part-{len(self.files):05d}.parquet"
                self.files.append(name)
                self.writer = pq.ParquetWriter(self.out_dir / name, table.schema, compression="zstd")
                self.rows_in_shard = 0
            take = min(table.num_rows, self.shard_rows - self.rows_in_shard)
            self.writer.write_table(table.slice(0, take))
            self.rows_in_shard += take
            table = table.slice(take)
            if self.rows_in_shard >= self.shard_rows:
                self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def preprocess(job, progress=print) -> dict:
    """Run the preprocess stage for a validated ``JobConfig``; returns the manifest (also written to disk)."""
    from ray.data import ActorPoolStrategy, DataContext

    started = time.time()
    files = expand_paths(job.data.corpus)
    chunks = plan_chunks(files, int(job.data.chunk_mb * 2**20))
    chunk_bytes = {c["index"]: c["end"] - c["start"] for c in chunks}
    total_bytes = sum(chunk_bytes.values())
    out_dir = job.dataset_dir
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)

    DataContext.get_current().execution_options.preserve_order = True  # deterministic shard contents
    collector = RepairCollector.remote()
    data = ray.data.from_items(chunks, override_num_blocks=len(chunks)).map_batches(
        InstanceBuilder,
        fn_constructor_kwargs={"job_json": job.model_dump_json(), "collector": collector},
        batch_size=1,
        compute=ActorPoolStrategy(min_size=1, max_size=job.data.tokenize_actors),
        num_cpus=job.data.tokenize_cpus,
    )
    writer = ShardWriter(out_dir, job.data.shard_rows)
    instances, done_bytes, seen_chunks, last_report = 0, 0, set(), 0.0
    for table in data.iter_batches(batch_size=None, batch_format="pyarrow"):
        for index in set(table.column("chunk").to_pylist()) - seen_chunks:
            seen_chunks.add(index)
            done_bytes += chunk_bytes[index]
        writer.write(table.drop_columns(["chunk"]))
        instances += table.num_rows
        if time.time() - last_report > 5:
            last_report = time.time()
            elapsed = last_report - started
            progress(
                f"preprocess: {done_bytes / 2**20:.1f}/{total_bytes / 2**20:.1f} MB, {instances:,} instances, "
                f"{done_bytes / 2**20 / elapsed:.2f} MB/s"
            )
    writer.close()
    if instances == 0:
        raise ValueError(
            f"no training instance was built from {len(files)} file(s): processor "
            f"'{job.data.processor.name}' reads the '{PROCESSORS.get(job.data.processor.name).layout}' layout; "
            "check the corpus shape and the repair counts"
        )
    summary = ray.get(collector.summary.remote())
    ray.kill(collector)
    tokenizer = build_tokenizer(job.tokenizer)
    tokenizer.vocab.save(out_dir / VOCAB)  # training and checkpoints read the vocabulary from the dataset
    seconds = time.time() - started
    manifest = {
        "processor": job.data.processor.model_dump(),
        "targets_fed": list(PROCESSORS.get(job.data.processor.name).feeds),
        "tokenizer": tokenizer.fingerprint,
        "vocab_size": tokenizer.vocab_size,
        "seq_length": job.data.processor.seq_length,
        "seed": job.data.seed,
        "corpus": files,
        "corpus_bytes": total_bytes,
        "chunks": len(chunks),
        "instances": instances,
        **summary["totals"],
        "repairs": summary["repairs"],
        "shards": writer.files,
        "seconds": round(seconds, 2),
        "mb_per_s": round(total_bytes / 2**20 / max(seconds, 1e-9), 3),
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    if summary["repairs"]["counts"]:
        progress(f"preprocess: repaired or skipped: {summary['repairs']['counts']} (examples in {out_dir / MANIFEST})")
    progress(f"preprocess: {instances:,} instances from {total_bytes / 2**20:.1f} MB in {seconds:.1f}s -> {out_dir}")
    return manifest


def read_manifest(dataset_dir: Path) -> dict:
    path = Path(dataset_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no {MANIFEST} in {dataset_dir}: run `launch.py preprocess` first")
    return json.loads(path.read_text())

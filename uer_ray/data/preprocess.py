"""Preprocess stage: corpus -> Ray Data (read + repair + tokenize + build instances in an actor pool) -> Parquet shards
plus ``manifest.json``.

The unit of work is a byte-range chunk of a corpus file (a compressed file is one chunk, streamed), so memory per
actor is bounded by the chunk size whatever the corpus size, and each chunk's randomness is seeded by (seed, chunk
index): the same seed gives the same instances whatever the number of actors. The driver writes the shards in chunk
order, so the output is byte-identical too.

Before Ray starts, the first MB of the corpus is sniffed: a corpus whose shape does not fit the processor (``bert``
on one document a line, ``cls`` without ``label<TAB>text``) fails at once with the counts and the fix.
"""
from __future__ import annotations

import gc
import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from uer_ray.data.corpus import RepairLog, expand_paths, open_binary, plan_chunks, read_chunk
from uer_ray.registry import PROCESSORS
from uer_ray.tokenizers import build_tokenizer

MANIFEST = "manifest.json"
VOCAB = "vocab.txt"
TGT_VOCAB = "tgt_vocab.txt"


class CorpusShapeError(ValueError):
    """The corpus does not have the shape the chosen processor reads; the message says how to fix it."""


@ray.remote(num_cpus=0)
class RepairCollector:
    """Gathers each chunk's repair counts and document/line counts for the manifest and the progress line."""

    def __init__(self):
        self.log = RepairLog()
        self.totals: dict[str, int] = {}

    def add(self, log: dict, totals: dict[str, int]) -> None:
        self.log.merge(RepairLog.from_dict(log))
        for key, value in totals.items():
            self.totals[key] = self.totals.get(key, 0) + value

    def progress(self) -> dict[str, int]:
        return dict(self.totals)

    def summary(self) -> dict:
        return {"repairs": self.log.to_dict(), "totals": self.totals}


class InstanceBuilder:
    """Ray Data actor: loads the tokenizer once, then turns chunk descriptors into instance tables."""

    def __init__(self, tokenizer: dict, processor: dict, seed: int, max_line_chars: int, collector):
        from uer_ray.registry import TOKENIZERS

        # Only the two components are re-validated here (not the whole job: its model check is the driver's).
        tok_cfg = TOKENIZERS.get(tokenizer["name"]).Config.model_validate(tokenizer)
        proc_cls = PROCESSORS.get(processor["name"])
        self.tokenizer = build_tokenizer(tok_cfg)
        self.processor = proc_cls(proc_cls.Config.model_validate(processor), self.tokenizer.vocab)
        self.seed = seed
        self.max_line_bytes = max_line_chars * 4  # UTF-8: at most 4 bytes a character
        self.collector = collector

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        tables = []
        for i in range(len(batch["index"])):
            chunk = {"index": int(batch["index"][i]), "path": str(batch["path"][i]), "start": int(batch["start"][i]),
                     "end": int(batch["end"][i]), "whole": bool(batch["whole"][i])}
            tables.append(self._build(chunk))
        return pa.concat_tables(tables)

    def _build(self, chunk: dict) -> pa.Table:
        log = RepairLog()
        wheres: list[str] = []
        docs: list[list[str]] = []
        gc.disable()  # millions of short-lived lists: the cyclic collector would cost ~10-20% for nothing
        try:
            docs = read_chunk(chunk, self.processor.layout, self.max_line_bytes, log, wheres)
            # Early progress (fire and forget): lines and MB read show up before the chunk is tokenized.
            self.collector.add.remote({}, {"lines": sum(len(d) for d in docs), "bytes_read": chunk["end"] - chunk["start"]})
            rng = np.random.default_rng([self.seed, chunk["index"]])
            table, totals = self.processor.process(docs, wheres, self.tokenizer, rng, log)
        except Exception as exc:  # nothing crashes a worker: the chunk is skipped and named in the manifest
            log.add("chunk_failed", f"{chunk['path']}@chunk{chunk['index']}: {type(exc).__name__}: {exc}"[:500])
            table, totals = self.processor.build([], np.random.default_rng(0)), {}
        finally:
            gc.enable()
        totals = {**totals,
                  "bytes_done": chunk["end"] - chunk["start"], "chunks_done": 1, "instances": table.num_rows}
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


# ----------------------------------------------------------------------------------------------------------------
# Corpus shape
# ----------------------------------------------------------------------------------------------------------------
def sniff_corpus(files: list[str], sample_bytes: int = 1 << 20) -> dict:
    """Counts over the first ``sample_bytes`` of the corpus (across files): lines, blank lines, lines with a tab,
    documents (blank-line separated) and documents of one line."""
    lines = blank = tabbed = docs = single = 0
    run = 0
    read = 0
    for path in files:
        if read >= sample_bytes:
            break
        with open_binary(path) as f:
            while read < sample_bytes:
                line = f.readline(1 << 20)
                if not line:
                    break
                read += len(line)
                if line.strip():
                    lines += 1
                    tabbed += b"\t" in line
                    run += 1
                else:
                    blank += 1
                    if run:
                        docs += 1
                        single += run == 1
                    run = 0
        if run:
            docs += 1
            single += run == 1
            run = 0
    return {"sampled_bytes": read, "lines": lines, "blank_lines": blank, "tab_lines": tabbed,
            "documents": docs, "single_line_documents": single}


def check_corpus_shape(name: str, layout: str, shape: dict, warn=print) -> None:
    """Raise :class:`CorpusShapeError` when the corpus cannot feed processor ``name``; warn when it barely can."""
    lines, blank, docs, single = shape["lines"], shape["blank_lines"], shape["documents"], shape["single_line_documents"]
    sample = f"(first {shape['sampled_bytes'] / 2**20:.1f} MB: {lines:,} lines, {blank:,} blank lines, {docs:,} documents)"
    if lines == 0:
        return
    if name in ("bert", "albert"):
        pair = "next-sentence" if name == "bert" else "sentence-order"
        if blank == 0:
            raise CorpusShapeError(
                f"corpus shape: processor '{name}' needs one sentence a line with documents separated by blank lines "
                f"(for {pair} pairs), but the corpus has no blank line {sample}: it looks like one document a line. "
                f"Use processor mlm (or lm) for such a corpus, or separate documents with blank lines"
            )
        if docs and single / docs >= 0.8:
            message = (
                f"corpus shape: {single:,} of {docs:,} documents have a single sentence {sample}; processor '{name}' "
                f"builds {pair} pairs from documents of several sentences (one sentence a line). Use processor mlm, "
                f"or split documents into one sentence a line"
            )
            if single == docs:
                raise CorpusShapeError(message)
            warn("WARNING " + message)
    elif name in ("cls", "mt", "seq2seq"):
        what = "label<TAB>text" if name == "cls" else "source<TAB>target"
        if shape["tab_lines"] < 0.5 * lines:
            raise CorpusShapeError(
                f"corpus shape: processor '{name}' reads '{what}' lines, but only {shape['tab_lines']:,} of {lines:,} "
                f"sampled lines hold a tab {sample}"
            )
    elif layout == "line" and blank and docs and blank >= 0.05 * lines:
        warn(
            f"WARNING corpus shape: the corpus has {blank:,} blank lines {sample}: it looks like one sentence a line "
            f"with documents separated by blank lines, but processor '{name}' reads one document a line; "
            f"set data.processor.layout=paragraph to keep documents together"
        )


# ----------------------------------------------------------------------------------------------------------------
# The stage
# ----------------------------------------------------------------------------------------------------------------
def _progress_loop(collector, total_bytes: int, started: float, stop: threading.Event, progress, every: float):
    while not stop.wait(every):
        try:
            done = ray.get(collector.progress.remote(), timeout=10)
        except Exception:  # noqa: BLE001 - progress is best effort
            continue
        elapsed = max(time.time() - started, 1e-9)
        mb = done.get("bytes_done", 0) / 2**20
        progress(
            f"preprocess: read {done.get('bytes_read', 0) / 2**20:.1f} MB, {done.get('lines', 0):,} lines; built "
            f"{mb:.1f}/{total_bytes / 2**20:.1f} MB, "
            f"{done.get('instances', 0):,} instances, {mb / elapsed:.2f} MB/s, "
            f"{done.get('tokens', 0) / elapsed:,.0f} tokens/s, {elapsed:.0f}s"
        )


def _cluster_cpus() -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def preprocess(job, progress=print, stats: bool = False, progress_every: float = 2.0) -> dict:
    """Run the preprocess stage for a validated ``JobConfig``; returns the manifest (also written to disk).

    ``stats=True`` also prints :func:`uer_ray.data.stats.dataset_stats` of the result (and stores it in the
    manifest under ``stats``).
    """
    from ray.data import ActorPoolStrategy, DataContext

    started = time.time()
    name = job.data.processor.name
    processor_cls = PROCESSORS.get(name)
    layout = getattr(job.data.processor, "layout", None) or processor_cls.layout
    files = expand_paths(job.data.corpus)
    shape = sniff_corpus(files)
    if getattr(job.data, "check_shape", True):
        check_corpus_shape(name, layout, shape, warn=progress)
    chunks = plan_chunks(files, int(job.data.chunk_mb * 2**20))
    total_bytes = sum(c["end"] - c["start"] for c in chunks)
    for c in chunks:
        c.setdefault("whole", False)
    out_dir = job.dataset_dir
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    progress(f"preprocess: {len(files)} file(s), {total_bytes / 2**20:.1f} MB in {len(chunks)} chunk(s), "
             f"processor {name}, starting Ray Data")

    from uer_ray.runtime import init_ray

    init_ray(job.run)
    DataContext.get_current().execution_options.preserve_order = True  # deterministic shard contents
    collector = RepairCollector.remote()
    actors = min(job.data.tokenize_actors or _cluster_cpus(), len(chunks))
    data = ray.data.from_items(chunks, override_num_blocks=len(chunks)).map_batches(
        InstanceBuilder,
        fn_constructor_kwargs={
            "tokenizer": job.tokenizer.model_dump(mode="json"),
            "processor": job.data.processor.model_dump(mode="json"),
            "seed": job.data.seed,
            "max_line_chars": job.data.max_line_chars,
            "collector": collector,
        },
        batch_size=1,
        # All actors start at once (not one at a time as the autoscaler sees a backlog); work starts with the first
        # that is ready, so actors the cluster cannot place yet never hold the run up.
        compute=ActorPoolStrategy(min_size=1, max_size=actors, initial_size=actors),
        num_cpus=job.data.tokenize_cpus,
    )
    writer = ShardWriter(out_dir, job.data.shard_rows)
    stop = threading.Event()
    reporter = threading.Thread(
        target=_progress_loop, args=(collector, total_bytes, started, stop, progress, progress_every), daemon=True
    )
    reporter.start()
    instances = 0
    try:
        for table in data.iter_batches(batch_size=None, batch_format="pyarrow"):
            writer.write(table.drop_columns(["chunk"]))
            instances += table.num_rows
    finally:
        stop.set()
        reporter.join()
        writer.close()
    summary = ray.get(collector.summary.remote())
    ray.kill(collector)
    totals = summary["totals"]
    if instances == 0:
        raise CorpusShapeError(
            f"no training instance was built from {len(files)} file(s) ({totals.get('lines', 0):,} lines, "
            f"{totals.get('documents', 0):,} documents): processor '{name}' reads the '{layout}' layout; "
            f"check the corpus shape and the repair counts {summary['repairs']['counts']}"
        )
    tokenizer = build_tokenizer(job.tokenizer)
    tokenizer.vocab.save(out_dir / VOCAB)  # training and checkpoints read the vocabulary from the dataset
    extra = {}
    if getattr(job.data.processor, "tgt_tokenizer", None) is not None:
        tgt = build_tokenizer(job.data.processor.tgt_tokenizer)
        tgt.vocab.save(out_dir / TGT_VOCAB)
        extra = {"tgt_tokenizer": tgt.fingerprint, "tgt_vocab_size": tgt.vocab_size}
    seconds = time.time() - started
    for key in ("bytes_done", "bytes_read", "chunks_done", "instances"):
        totals.pop(key, None)
    manifest = {
        "processor": job.data.processor.model_dump(mode="json"),
        "targets_fed": list(processor_cls.feeds),
        "tokenizer": tokenizer.fingerprint,
        "vocab_size": tokenizer.vocab_size,
        **extra,
        "seq_length": job.data.processor.seq_length,
        "seed": job.data.seed,
        "corpus": files,
        "corpus_bytes": total_bytes,
        "corpus_shape": shape,
        "chunks": len(chunks),
        "instances": instances,
        **totals,
        "repairs": summary["repairs"],
        "shards": writer.files,
        "seconds": round(seconds, 2),
        "mb_per_s": round(total_bytes / 2**20 / max(seconds, 1e-9), 3),
    }
    if name in ("bert", "albert") and totals.get("documents"):
        single = totals.get("single_sentence_documents", 0)
        if single / totals["documents"] >= 0.5:
            progress(f"WARNING corpus shape: {single:,} of {totals['documents']:,} documents have one sentence; "
                     f"processor '{name}' needs multi-sentence documents (use processor mlm, or one sentence a line)")
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    if summary["repairs"]["counts"]:
        progress(f"preprocess: repaired or skipped: {summary['repairs']['counts']} (examples in {out_dir / MANIFEST})")
    progress(f"preprocess: {instances:,} instances from {total_bytes / 2**20:.1f} MB in {seconds:.1f}s "
             f"({manifest['mb_per_s']} MB/s) -> {out_dir}")
    if stats:
        from uer_ray.data.stats import dataset_stats

        manifest["stats"] = dataset_stats(out_dir, progress=progress)
        (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    return manifest


def read_manifest(dataset_dir: Path) -> dict:
    path = Path(dataset_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no {MANIFEST} in {dataset_dir}: run `launch.py preprocess` first")
    return json.loads(path.read_text())

"""Preprocess stage: corpus -> Ray Data (read + repair + tokenize + build instances in an actor pool) -> Parquet shards
plus ``manifest.json``, all in storage (a local path or a URI).

The unit of work is a byte-range chunk of a corpus file (a compressed file is one chunk, streamed), so memory per
actor is bounded by the chunk size whatever the corpus size, and each chunk's randomness is seeded by (seed, chunk
index). The actor that built a chunk writes it as shard ``part-<chunk>.parquet`` (row groups of
``data.row_group_rows``, the unit training reads and shuffles): the same seed gives byte-identical shards whatever
the number of actors, and the driver only sees a row of counts per chunk, so its memory does not grow with the data.

Before Ray starts, the first MB of the corpus is sniffed: a corpus whose shape does not fit the processor (``bert``
on one document a line, ``cls`` without ``label<TAB>text``) fails at once with the counts and the fix.
"""
from __future__ import annotations

import gc
import json
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from uer_ray import storage
from uer_ray.config import ON_WORKER
from uer_ray.data.corpus import RepairLog, expand_paths, file_size, open_binary, plan_chunks, read_chunk
from uer_ray.errors import UserError
from uer_ray.registry import PROCESSORS
from uer_ray.tokenizers import build_tokenizer

MANIFEST = "manifest.json"
VOCAB = "vocab.txt"
TGT_VOCAB = "tgt_vocab.txt"


class CorpusShapeError(UserError):
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
    """Ray Data actor: loads the tokenizer once, then turns each chunk into a Parquet shard that it writes to storage
    itself (``part-<chunk>.parquet``); only a row of counts per chunk goes back to the driver."""

    def __init__(self, tokenizer: dict, processor: dict, seed: int, max_line_chars: int, out_dir: str,
                 row_group_rows: int, secrets: dict, collector):
        from uer_ray.registry import TOKENIZERS
        from uer_ray.runtime import apply_secrets

        apply_secrets(secrets)
        # Only the two components are re-validated here (not the whole job: its model check is the driver's).
        tok_cfg = TOKENIZERS.get(tokenizer["name"]).Config.model_validate(tokenizer, context=ON_WORKER)
        proc_cls = PROCESSORS.get(processor["name"])
        self.tokenizer = build_tokenizer(tok_cfg)
        self.processor = proc_cls(proc_cls.Config.model_validate(processor, context=ON_WORKER), self.tokenizer.vocab)
        self.seed = seed
        self.max_line_bytes = max_line_chars * 4  # UTF-8: at most 4 bytes a character
        self.out_dir, self.row_group_rows = out_dir, row_group_rows
        self.collector = collector

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        written = [self._build({"index": int(batch["index"][i]), "path": str(batch["path"][i]),
                                "start": int(batch["start"][i]), "end": int(batch["end"][i]),
                                "whole": bool(batch["whole"][i])})
                   for i in range(len(batch["index"]))]
        return {"chunk": np.array([w[0] for w in written], np.int64), "rows": np.array([w[1] for w in written], np.int64)}

    def _build(self, chunk: dict) -> tuple[int, int]:
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
        if table.num_rows:
            filesystem, path = storage.resolve(storage.join(self.out_dir, shard_name(chunk["index"])))
            pq.write_table(table, path, filesystem=filesystem, compression="zstd", row_group_size=self.row_group_rows)
        totals = {**totals,
                  "bytes_done": chunk["end"] - chunk["start"], "chunks_done": 1, "instances": table.num_rows}
        ray.get(self.collector.add.remote(log.to_dict(), totals))
        return chunk["index"], table.num_rows


def shard_name(chunk: int) -> str:
    return f"part-{chunk:05d}.parquet"


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
    from ray.data import ActorPoolStrategy

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
    storage.delete(out_dir)
    storage.makedirs(out_dir)
    progress(f"preprocess: {len(files)} file(s), {total_bytes / 2**20:.1f} MB in {len(chunks)} chunk(s), "
             f"processor {name}, starting Ray Data")

    from uer_ray.runtime import init_ray

    init_ray(job.run)
    from uer_ray.runtime import secrets_from_env

    collector = RepairCollector.remote()
    actors = min(job.data.tokenize_actors or _cluster_cpus(), len(chunks))
    written = ray.data.from_items(chunks, override_num_blocks=len(chunks)).map_batches(
        InstanceBuilder,
        fn_constructor_kwargs={
            "tokenizer": job.tokenizer.model_dump(mode="json"),
            "processor": job.data.processor.model_dump(mode="json"),
            "seed": job.data.seed,
            "max_line_chars": job.data.max_line_chars,
            "out_dir": out_dir,
            "row_group_rows": job.data.row_group_rows,
            "secrets": secrets_from_env(),
            "collector": collector,
        },
        batch_size=1,
        # All actors start at once (not one at a time as the autoscaler sees a backlog); work starts with the first
        # that is ready, so actors the cluster cannot place yet never hold the run up.
        compute=ActorPoolStrategy(min_size=1, max_size=actors, initial_size=actors),
        num_cpus=job.data.tokenize_cpus,
    )
    stop = threading.Event()
    reporter = threading.Thread(
        target=_progress_loop, args=(collector, total_bytes, started, stop, progress, progress_every), daemon=True
    )
    reporter.start()
    shards: dict[int, int] = {}
    try:
        for batch in written.iter_batches(batch_size=None, batch_format="numpy"):
            shards.update(zip(batch["chunk"].tolist(), batch["rows"].tolist()))
    finally:
        stop.set()
        reporter.join()
    instances = sum(shards.values())
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
    save_vocab(tokenizer.vocab, storage.join(out_dir, VOCAB))  # training and checkpoints read it from the dataset
    extra = {}
    if getattr(job.data.processor, "tgt_tokenizer", None) is not None:
        tgt = build_tokenizer(job.data.processor.tgt_tokenizer)
        save_vocab(tgt.vocab, storage.join(out_dir, TGT_VOCAB))
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
        "shards": [shard_name(chunk) for chunk, rows in sorted(shards.items()) if rows],
        "shard_rows": [rows for _, rows in sorted(shards.items()) if rows],
        "seconds": round(seconds, 2),
        "mb_per_s": round(total_bytes / 2**20 / max(seconds, 1e-9), 3),
    }
    if name in ("bert", "albert") and totals.get("documents"):
        single = totals.get("single_sentence_documents", 0)
        if single / totals["documents"] >= 0.5:
            progress(f"WARNING corpus shape: {single:,} of {totals['documents']:,} documents have one sentence; "
                     f"processor '{name}' needs multi-sentence documents (use processor mlm, or one sentence a line)")
    storage.write_json(storage.join(out_dir, MANIFEST), manifest)
    if summary["repairs"]["counts"]:
        progress(f"preprocess: repaired or skipped: {summary['repairs']['counts']} (examples in "
                 f"{storage.join(out_dir, MANIFEST)})")
    progress(f"preprocess: {instances:,} instances from {total_bytes / 2**20:.1f} MB in {seconds:.1f}s "
             f"({manifest['mb_per_s']} MB/s) -> {out_dir}")
    if stats:
        from uer_ray.data.stats import dataset_stats

        manifest["stats"] = dataset_stats(out_dir, progress=progress)
        storage.write_json(storage.join(out_dir, MANIFEST), manifest)
    return manifest


def read_manifest(dataset_dir: str) -> dict:
    path = storage.join(dataset_dir, MANIFEST)
    if not storage.exists(path):
        raise FileNotFoundError(f"no {MANIFEST} in {dataset_dir}: run `launch.py preprocess` first")
    return storage.read_json(path)


def dataset_is_current(job) -> bool:
    """Whether ``job.dataset_dir`` holds what preprocessing ``job`` would write (same corpus files and sizes,
    processor, tokenizer and seed): datasets are deterministic, so it need not be made again."""
    if not storage.exists(storage.join(job.dataset_dir, MANIFEST)):
        return False
    manifest = read_manifest(job.dataset_dir)
    files = expand_paths(job.data.corpus)
    return (manifest.get("corpus") == files and manifest.get("seed") == job.data.seed
            and manifest.get("processor") == job.data.processor.model_dump(mode="json")
            and manifest.get("tokenizer") == build_tokenizer(job.tokenizer).fingerprint
            and manifest.get("corpus_bytes") == sum(file_size(path) for path in files))


def save_vocab(vocab, location: str) -> None:
    with storage.staging_dir() as directory:
        vocab.save(directory / VOCAB)
        storage.write_bytes(location, (directory / VOCAB).read_bytes())

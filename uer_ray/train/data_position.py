"""Training data in a seeded, restorable order: every epoch a new order, and a position (epoch, batch) from which the
exact same batches follow, whatever process reads them.

The dataset is a set of Parquet files in storage, read in blocks (one per row group). For epoch ``e`` the blocks are
permuted by ``(seed, e)``; windows of ``window`` consecutive blocks have their rows permuted by ``(seed, e, w)``
(a shuffle buffer whose content is fixed by the seed); the epoch's rows form one stream, cut into ``world`` equal
contiguous parts, one per rank, and each part into batches. A rank reads only the windows of its own part. Every rank
makes the same number of batches an epoch, ``(rows // world) // batch_size``; the few rows left over differ from epoch
to epoch.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from uer_ray import storage
from uer_ray.errors import UserError


@dataclass(frozen=True)
class Block:
    file: int
    row_group: int
    rows: int


class ParquetSource:
    """Parquet files (local paths or storage URIs) as blocks of rows, one block per row group."""

    def __init__(self, files: list[str], columns: list[str] | None = None):
        self.files, self.columns = list(files), columns
        self._handles: dict[int, pq.ParquetFile] = {}
        self.blocks = [
            Block(index, group, self._file(index).metadata.row_group(group).num_rows)
            for index in range(len(self.files))
            for group in range(self._file(index).metadata.num_row_groups)
        ]
        self.rows = sum(block.rows for block in self.blocks)

    def _file(self, index: int) -> pq.ParquetFile:
        if index not in self._handles:
            try:
                self._handles[index] = pq.ParquetFile(storage.open_input_file(self.files[index]))
            except FileNotFoundError:
                # Retrying cannot bring a deleted shard back: a user's error, stopped at once, one line.
                raise UserError(f"training data not found: {self.files[index]} (re-run the stage that wrote it)") from None
        return self._handles[index]

    def read(self, block: Block) -> pa.Table:
        return self._file(block.file).read_row_group(block.row_group, columns=self.columns)

    def read_rows(self, start: int, stop: int) -> pa.Table:
        """Rows ``[start, stop)`` in file order (evaluation: every row once)."""
        tables, offset = [], 0
        for block in self.blocks:
            if offset + block.rows > start and offset < stop:
                table = self.read(block)
                tables.append(table.slice(max(0, start - offset), min(block.rows, stop - offset) - max(0, start - offset)))
            offset += block.rows
        return pa.concat_tables(tables) if tables else self.read(self.blocks[0]).slice(0, 0)


@dataclass(frozen=True)
class DataPosition:
    """The next batch a rank reads: batch ``batch`` (0-based) of epoch ``epoch``."""

    epoch: int = 0
    batch: int = 0


class EpochOrder:
    def __init__(self, source: ParquetSource, seed: int, epoch: int, window: int):
        self.source, self.seed, self.epoch = source, seed, epoch
        order = np.random.default_rng([seed, epoch]).permutation(len(source.blocks))
        self.windows = [order[i : i + window] for i in range(0, len(order), window)]
        sizes = [sum(source.blocks[b].rows for b in blocks) for blocks in self.windows]
        self.window_starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def window_rows(self, w: int) -> pa.Table:
        table = pa.concat_tables([self.source.read(self.source.blocks[b]) for b in self.windows[w]])
        return table.take(np.random.default_rng([self.seed, self.epoch, w]).permutation(table.num_rows))

    def rows(self, start: int, stop: int) -> Iterator[pa.Table]:
        """The epoch's rows ``[start, stop)`` as a few tables, reading only the windows they fall in."""
        w = int(np.searchsorted(self.window_starts, start, side="right")) - 1
        while start < stop:
            table = self.window_rows(w)
            offset = start - int(self.window_starts[w])
            take = min(table.num_rows - offset, stop - start)
            yield table.slice(offset, take)
            start += take
            w += 1


def batches_per_epoch(rows: int, world: int, batch_size: int) -> int:
    return (rows // world) // batch_size


def rank_batches(
    source: ParquetSource, seed: int, rank: int, world: int, batch_size: int, window: int, start: DataPosition,
    group_by_length: bool = False,
) -> Iterator[tuple[DataPosition, DataPosition, pa.Table]]:
    """(position of the batch, position after it, batch table) for this rank from ``start`` on, epoch after epoch,
    forever. The position after a batch is where a resume continues. ``group_by_length``: each run of
    ``LENGTH_POOL`` batches is sorted by length into batches whose order is then shuffled (less padding, the same
    rows an epoch)."""
    per_epoch = batches_per_epoch(source.rows, world, batch_size)
    if per_epoch == 0:
        raise ValueError(
            f"the dataset has {source.rows} rows: fewer than workers x batch size ({world} x {batch_size})"
        )
    epoch, batch = start.epoch, start.batch
    while True:
        order = EpochOrder(source, seed, epoch, window)
        part = rank * (source.rows // world)
        if group_by_length:
            stream = _length_grouped(order, part, per_epoch, batch_size, (seed, epoch, rank), batch)
        else:
            stream = enumerate(_cut(order.rows(part + batch * batch_size, part + per_epoch * batch_size), batch_size), batch)
        for index, table in stream:
            following = DataPosition(epoch, index + 1) if index + 1 < per_epoch else DataPosition(epoch + 1, 0)
            yield DataPosition(epoch, index), following, table
        epoch, batch = epoch + 1, 0


LENGTH_POOL = 32  # batches sorted by length together


def _cut(tables: Iterator[pa.Table], batch_size: int) -> Iterator[pa.Table]:
    """A stream of tables -> tables of exactly ``batch_size`` rows (the stream holds whole batches)."""
    pending: list[pa.Table] = []
    held = 0
    for table in tables:
        pending.append(table)
        held += table.num_rows
        while held >= batch_size:
            rows = pa.concat_tables(pending)
            yield rows.slice(0, batch_size)
            pending, held = [rows.slice(batch_size)], rows.num_rows - batch_size


def _length_grouped(order: EpochOrder, part: int, per_epoch: int, batch_size: int, seeds: tuple[int, ...],
                    first: int) -> Iterator[tuple[int, pa.Table]]:
    """(batch index, batch) from ``first`` on: pool p holds batches [p x POOL, (p + 1) x POOL) of the rank's part,
    its rows sorted by the length of ``src``, its batches in an order seeded by (seed, epoch, rank, p)."""
    import pyarrow.compute as pc

    for pool in range(first // LENGTH_POOL, -(-per_epoch // LENGTH_POOL)):
        begin, count = pool * LENGTH_POOL, min(LENGTH_POOL, per_epoch - pool * LENGTH_POOL)
        rows = pa.concat_tables(order.rows(part + begin * batch_size, part + (begin + count) * batch_size))
        by_length = np.argsort(pc.list_value_length(rows.column("src")).to_numpy(zero_copy_only=False), kind="stable")
        shuffled = np.random.default_rng([*seeds, pool]).permutation(count)
        for slot, which in enumerate(shuffled):
            if begin + slot >= first:
                yield begin + slot, rows.take(by_length[which * batch_size:(which + 1) * batch_size])


def eval_range(rows: int, rank: int, world: int) -> tuple[int, int]:
    """This rank's contiguous share of an evaluation set: together the ranks score every row exactly once."""
    return rank * rows // world, (rank + 1) * rows // world


class Prefetcher:
    """Runs an iterator (reading, collation, masking) in a background thread, ``depth`` items ahead of the consumer,
    so the training step never waits for data it could have had. Exceptions reach the consumer. ``depth=0`` runs it
    in the consumer's thread instead: on a CPU worker whose math threads fill its cores, a third busy thread only
    takes turns with them."""

    _END = object()

    def __init__(self, items: Iterator, depth: int, transform: Callable = lambda item: item):
        self._stop = threading.Event()
        self._inline = map(transform, items) if depth == 0 else None
        self._thread = None
        if self._inline is None:
            self._queue: queue.Queue = queue.Queue(maxsize=depth)
            self._thread = threading.Thread(target=self._run, args=(items, transform), daemon=True,
                                            name="uer-prefetch")
            self._thread.start()

    def _run(self, items: Iterator, transform: Callable) -> None:
        try:
            for item in items:
                if self._stop.is_set():
                    return
                self._put(transform(item))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._put(exc)
            return
        self._put(self._END)

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self):
        return self

    def __next__(self):
        if self._inline is not None:
            return next(self._inline)
        item = self._queue.get()
        if item is self._END:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

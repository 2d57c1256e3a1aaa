"""The training data order: a new seeded order every epoch, identical for the same seed, disjoint equal shares for
the ranks, a position from which a resume reads exactly the batches an uninterrupted run reads; evaluation scores
every row exactly once whatever the worker count."""
from __future__ import annotations

import itertools
import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from uer_ray.train.data_position import (
    DataPosition, ParquetSource, Prefetcher, batches_per_epoch, eval_range, rank_batches,
)


@pytest.fixture()
def source(tmp_path):
    """104 rows (ids 0..103) in 3 files of unequal size, row groups of 7 rows."""
    files, first = [], 0
    for index, rows in enumerate([50, 23, 31]):
        path = tmp_path / f"part-{index}.parquet"
        pq.write_table(pa.table({"id": np.arange(first, first + rows)}), path, row_group_size=7)
        files.append(str(path))
        first += rows
    return ParquetSource(files)


def read(source, rank=0, world=1, start=DataPosition(), batches=20, seed=1, batch_size=5, window=3):
    stream = rank_batches(source, seed, rank, world, batch_size, window, start)
    return [(position, following, table.column("id").to_pylist())
            for position, following, table in itertools.islice(stream, batches)]


def ids_of_epoch(batches, epoch):
    return [i for position, _, ids in batches if position.epoch == epoch for i in ids]


def test_each_epoch_a_new_seeded_order(source):
    batches = read(source, batches=40)  # 20 batches an epoch
    first, second = ids_of_epoch(batches, 0), ids_of_epoch(batches, 1)
    assert len(first) == len(set(first)) == 100 and first != second
    assert sorted(first) != first  # shuffled, not in file order
    assert read(source, batches=40) == batches  # same seed, same order
    assert ids_of_epoch(read(source, seed=2, batches=20), 0) != first


def test_resume_from_any_position_reads_the_same_batches(source):
    uninterrupted = read(source, rank=1, world=2, batches=30)
    for k in (0, 3, 9, 10, 17):
        resumed = read(source, rank=1, world=2, start=uninterrupted[k][1], batches=30 - k - 1)
        assert resumed == uninterrupted[k + 1:], k


def test_ranks_get_disjoint_equal_shares(source):
    per_epoch = batches_per_epoch(source.rows, 3, 5)
    shares = [ids_of_epoch(read(source, rank=r, world=3, batches=per_epoch), 0) for r in range(3)]
    assert per_epoch == 6 and all(len(share) == 30 for share in shares)
    assert len(set().union(*shares)) == 90


def test_duplicate_rows_are_scattered(tmp_path):
    """dup_factor copies are written side by side: the window shuffle must pull them apart."""
    ids = np.repeat(np.arange(500), 2)  # each row twice, adjacent, as the processors write dup copies
    pq.write_table(pa.table({"id": ids}), tmp_path / "dup.parquet", row_group_size=64)
    order = ids_of_epoch(read(ParquetSource([str(tmp_path / "dup.parquet")]), batches=100, batch_size=10, window=4), 0)
    adjacent = sum(a == b for a, b in zip(order, order[1:]))
    assert adjacent <= 3, adjacent  # ~1000 rows, windows of 256: a few coincidences at most


@pytest.mark.parametrize("world", [1, 2, 3, 4, 7])
def test_evaluation_scores_every_row_once(source, world):
    rows = []
    for rank in range(world):
        start, stop = eval_range(source.rows, rank, world)
        rows += source.read_rows(start, stop).column("id").to_pylist()
    assert rows == list(range(104))


@pytest.mark.parametrize("depth", [2, 0])
def test_prefetcher_hands_on_items_and_errors(depth):
    def items():
        yield from range(3)
        raise ValueError("bad shard")

    def prefetch_threads() -> int:
        return sum(thread.name == "uer-prefetch" for thread in threading.enumerate())

    prefetched = Prefetcher(items(), depth=depth, transform=lambda x: x * 10)
    assert next(prefetched) == 0
    assert prefetch_threads() == (depth > 0)  # depth 2: blocked on a full queue; depth 0: made in this thread
    assert [next(prefetched) for _ in range(2)] == [10, 20]
    with pytest.raises(ValueError, match="bad shard"):
        next(prefetched)
    prefetched.close()
    assert prefetch_threads() == 0


def test_length_grouped_batches_are_restorable_and_cover_the_epoch(tmp_path):
    lengths = np.random.default_rng(0).integers(1, 60, size=700)
    pq.write_table(pa.table({"src": [list(range(n)) for n in lengths], "id": np.arange(700)}), tmp_path / "r.parquet",
                   row_group_size=50)
    source = ParquetSource([str(tmp_path / "r.parquet")])

    def grouped(start=DataPosition(), batches=80):  # 70 batches an epoch
        stream = rank_batches(source, 1, 0, 1, 10, 4, start, group_by_length=True)
        return [(p, f, t.column("id").to_pylist(), t.column("src").to_pylist()) for p, f, t in itertools.islice(stream, batches)]

    run = grouped()
    epoch0 = [i for p, _, ids, _ in run if p.epoch == 0 for i in ids]
    assert sorted(epoch0) == list(range(700))  # every row once an epoch
    spans = [max(map(len, src)) - min(map(len, src)) for *_, src in run[:32]]
    assert np.mean(spans) < 8  # similar lengths together (random batches of 10 from 1..59 span ~45)
    assert [p.batch for p, *_ in run[:32]] == list(range(32))
    assert grouped(run[40][1], 39) == run[41:]  # resume mid-pool, across the epoch's end

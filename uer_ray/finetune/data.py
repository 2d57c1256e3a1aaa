"""Downstream data between the driver and the workers: each split is read and tokenized once on the driver (bad
rows counted and reported), then written to the run's storage as Parquet (features in small row groups, the unit
training reads and shuffles; examples beside them), where every worker reads it."""
from __future__ import annotations

import hashlib
import io

import pyarrow.compute as pc
import pyarrow.parquet as pq

from uer_ray import storage
from uer_ray.finetune.tasks.base import RowIssues, Task, TaskData

ROW_GROUP_ROWS = 128


def read_split(task: Task, path: str, max_bad_fraction: float, progress=print, labelled: bool = True,
               max_rows: int | None = None) -> TaskData:
    """Read one file through the task; report what was skipped; refuse a file that is mostly unusable."""
    data = task.read(storage.local_path(path), labelled=labelled)
    data.issues.check(data.examples.num_rows, max_bad_fraction)
    if data.issues.count:
        progress("WARNING " + data.issues.summary())
    if max_rows is not None and data.examples.num_rows > max_rows:
        data = head(data, max_rows)
    return data


def head(data: TaskData, examples: int) -> TaskData:
    """The first ``examples`` examples and their features."""
    keep = data.examples.slice(0, examples)
    last = keep.column("example_id")[-1].as_py()
    features = data.features.filter(pc.less_equal(data.features.column("example_id"), last))
    return TaskData(features, keep, data.issues)


def write_split(data: TaskData, location: str) -> str:
    """``<location>.features.parquet`` and ``<location>.examples.parquet``; returns the features' fingerprint."""
    fingerprint = hashlib.sha256()
    for part, table in (("features", data.features), ("examples", data.examples)):
        buffer = io.BytesIO()
        pq.write_table(table, buffer, row_group_size=ROW_GROUP_ROWS, compression="zstd")
        storage.write_bytes(f"{location}.{part}.parquet", buffer.getvalue())
        fingerprint.update(buffer.getvalue())
    return fingerprint.hexdigest()[:16]


def features_location(location: str) -> str:
    return f"{location}.features.parquet"


def read_written(location: str) -> TaskData:
    features = pq.read_table(storage.open_input_file(f"{location}.features.parquet"))
    examples = pq.read_table(storage.open_input_file(f"{location}.examples.parquet"))
    return TaskData(features, examples, RowIssues(location))

"""Downstream data between the driver and the workers: each split is read and tokenized once on the driver (bad
rows counted and reported), then written to the run's storage as Parquet (features in small row groups, the unit
training reads and shuffles; examples beside them), where every worker reads it."""
from __future__ import annotations

import hashlib
import io

import pyarrow.compute as pc
import pyarrow.parquet as pq

from uer_ray import storage
from uer_ray.finetune.tasks.base import DataError, RowIssues, Task, TaskData

ROW_GROUP_ROWS = 128
LABELLED_KEY = b"uer_ray.labelled"


def read_split(task: Task, path: str, max_bad_fraction: float, progress=print, labelled: bool | None = True,
               max_rows: int | None = None) -> TaskData:
    """Read one file through the task; report what was skipped; refuse a file that is mostly unusable.
    ``labelled=None``: scored when the file has gold labels, else predicted only (said so)."""
    local = storage.local_path(path)
    data = _read_labelled_if_possible(task, local, path, progress) if labelled is None else task.read(local, labelled)
    data.issues.check(data.examples.num_rows, max_bad_fraction)
    if data.issues.count:
        progress("WARNING " + data.issues.summary())
    if max_rows is not None and data.examples.num_rows > max_rows:
        data = head(data, max_rows)
    return data


def _read_labelled_if_possible(task: Task, local, path: str, progress) -> TaskData:
    """A test file without usable gold labels (UER-py's test_nolabel.tsv, CMRC's hidden answers) is not an error:
    its predictions are still wanted. Only a file with *no* labelled row falls back; a partly bad one is checked."""
    try:
        data = task.read(local, labelled=True)
        if data.examples.num_rows:
            return data
        reason, failure = data.issues.first(1), None
    except DataError as exc:
        data, reason, failure = None, str(exc), exc
    unlabelled = task.read(local, labelled=False)
    if not unlabelled.examples.num_rows:  # unusable either way: the labelled reading says why
        if failure:
            raise failure
        return data
    progress(f"WARNING {path}: no row has a usable gold label ({reason}); its predictions are written, not scored")
    unlabelled.labelled = False
    return unlabelled


def head(data: TaskData, examples: int) -> TaskData:
    """The first ``examples`` examples and their features."""
    keep = data.examples.slice(0, examples)
    last = keep.column("example_id")[-1].as_py()
    features = data.features.filter(pc.less_equal(data.features.column("example_id"), last))
    return TaskData(features, keep, data.issues, data.labelled)


def write_split(data: TaskData, location: str) -> str:
    """``<location>.features.parquet`` and ``<location>.examples.parquet``; returns the features' fingerprint."""
    fingerprint = hashlib.sha256()
    examples = data.examples.replace_schema_metadata({LABELLED_KEY: b"1" if data.labelled else b"0"})
    for part, table in (("features", data.features), ("examples", examples)):
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
    labelled = (examples.schema.metadata or {}).get(LABELLED_KEY, b"1") == b"1"
    return TaskData(features, examples, RowIssues(location), labelled)

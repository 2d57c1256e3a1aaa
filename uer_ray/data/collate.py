"""Parquet record batches (ragged list<int32> columns) -> padded tensors for the model, on the training worker."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch


def pad_lists(column: pa.Array | pa.ChunkedArray, pad_value: int) -> np.ndarray:
    """Ragged lists -> (rows, longest) int64 array, vectorised (no Python loop over rows)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    values = pc.list_flatten(column).to_numpy(zero_copy_only=False)
    out = np.full((len(lengths), int(lengths.max(initial=0))), pad_value, dtype=np.int64)
    out[np.arange(out.shape[1]) < lengths[:, None]] = values
    return out


def column_array(table: pa.Table, name: str, pad_value: int) -> np.ndarray:
    column = table.column(name)
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        return pad_lists(column, pad_value)
    return column.to_numpy().astype(np.int64)


def collate_instances(
    table: pa.Table, targets: dict, vocab, rng: np.random.Generator, data: dict | None = None
) -> dict[str, torch.Tensor]:
    """Inputs plus each target's labels; targets build their own labels (e.g. dynamic MLM masks) from the batch.
    ``data``: the dataset's processor config (from its manifest), e.g. its masking options."""
    from uer_ray.registry import TARGETS

    batch = {"src": column_array(table, "src", vocab.pad_id), "seg": column_array(table, "seg", 0)}
    for name, target_cfg in targets.items():
        TARGETS.get(name).prepare_labels(batch, table, target_cfg, vocab, rng, data=data)
    return {key: torch.from_numpy(value) for key, value in batch.items()}

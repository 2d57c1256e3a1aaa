"""Statistics of a preprocessed dataset: instance count, token-length histogram, UNK rate, repaired/skipped counts."""
from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from uer_ray import storage
from uer_ray.data.preprocess import VOCAB, read_manifest
from uer_ray.tokenizers import UNK


def dataset_stats(dataset_dir: str, bins: int = 8, progress=print) -> dict:
    """Read the shards one row group at a time (bounded memory) and print one summary; returns the numbers."""
    manifest = read_manifest(dataset_dir)
    vocab = storage.read_text(storage.join(dataset_dir, VOCAB)).split("\n")
    unk_id = vocab.index(UNK)
    seq_length = int(manifest.get("seq_length") or 512)
    edges = np.linspace(0, seq_length, bins + 1).astype(int)
    hist = np.zeros(bins, dtype=np.int64)
    instances = tokens = unk = 0
    labels: dict[str, dict[int, int]] = {}
    for shard in manifest["shards"]:
        parquet = pq.ParquetFile(storage.open_input_file(storage.join(dataset_dir, shard)))
        for group in range(parquet.num_row_groups):
            table = parquet.read_row_group(group)
            lengths = pc.list_value_length(table.column("src")).to_numpy(zero_copy_only=False)
            values = pc.list_flatten(table.column("src")).to_numpy(zero_copy_only=False)
            if "tgt_mlm" in table.column_names:  # static masks: count UNK in the original tokens
                original = pc.list_flatten(table.column("tgt_mlm")).to_numpy(zero_copy_only=False)
                values = np.where(original >= 0, original, values)
            instances += table.num_rows
            tokens += int(lengths.sum())
            unk += int((values == unk_id).sum())
            hist += np.histogram(np.clip(lengths, 0, seq_length), bins=edges)[0]
            for name in ("tgt_sp", "tgt_cls"):
                if name in table.column_names:
                    vals, counts = np.unique(table.column(name).to_numpy(), return_counts=True)
                    for v, c in zip(vals.tolist(), counts.tolist()):
                        labels.setdefault(name, {})[v] = labels.get(name, {}).get(v, 0) + c
    stats = {
        "instances": instances,
        "tokens": tokens,
        "mean_length": round(tokens / max(instances, 1), 2),
        "unk_rate": round(unk / max(tokens, 1), 6),
        "length_histogram": {f"{lo}-{hi}": int(n) for lo, hi, n in zip(edges[:-1], edges[1:], hist)},
        "labels": {k: {str(v): c for v, c in sorted(d.items())} for k, d in labels.items()},
        "repairs": manifest.get("repairs", {}).get("counts", {}),
        "documents": manifest.get("documents"),
        "lines": manifest.get("lines"),
    }
    lines = [
        f"dataset {dataset_dir}: {instances:,} instances, {tokens:,} tokens (mean {stats['mean_length']}), "
        f"UNK rate {stats['unk_rate']:.4%}",
        "  token length: " + ", ".join(f"{k}: {v:,}" for k, v in stats["length_histogram"].items()),
    ]
    for name, counts in stats["labels"].items():
        lines.append(f"  {name}: " + ", ".join(f"{k}: {v:,}" for k, v in counts.items()))
    lines.append("  repaired/skipped: " + (", ".join(f"{k}: {v:,}" for k, v in stats["repairs"].items()) or "none"))
    progress("\n".join(lines))
    return stats

"""Reads the history rows of an offline W&B run (.wandb file: a LevelDB-log framed stream of Record protos)."""
from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7  # ":W&B" + magic + version


def _records(data: bytes):
    pos, pending = HEADER, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk


def history(run_file: Path) -> list[dict]:
    from wandb.proto import wandb_internal_pb2

    rows = []
    for raw in _records(Path(run_file).read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            rows.append({(item.key or "/".join(item.nested_key)): json.loads(item.value_json) for item in record.history.item})
    return rows


def runs(root: Path) -> list[Path]:
    return sorted(Path(root).rglob("run-*.wandb"), key=lambda p: p.stat().st_mtime)


def run_id(run_file: Path) -> str:
    """The W&B run id of an offline run file (``run-<id>.wandb``)."""
    return Path(run_file).stem.removeprefix("run-")



def run_record(run_file: Path) -> dict:
    """``{id, group, job_type, config, history}`` of one offline run; config updates are merged in order."""
    from wandb.proto import wandb_internal_pb2

    found = {"id": None, "group": None, "job_type": None, "config": {}}
    for raw in _records(Path(run_file).read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            found.update(id=record.run.run_id, group=record.run.run_group, job_type=record.run.job_type)
            found["config"].update({item.key: json.loads(item.value_json) for item in record.run.config.update})
        elif kind == "config":
            found["config"].update({item.key: json.loads(item.value_json) for item in record.config.update})
    found["history"] = history(run_file)
    return found

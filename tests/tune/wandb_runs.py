"""What an offline W&B run recorded (config, group, job type, history), read back from its ``.wandb`` file."""
from __future__ import annotations

import json
from pathlib import Path

from wandb_offline import _records, history


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

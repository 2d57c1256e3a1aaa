"""What a training checkpoint holds and how a run continues from one, exactly.

A checkpoint directory (merged by Ray Train from every rank's part):
    model.safetensors, config.json, vocab.txt      the model (rank 0)
    trainer_state.json                             step, tokens, data position, layout, W&B run id, ... (rank 0)
    optimizer.pt                                   optimizer and gradient-scaler state (rank 0)
    rng_rank<r>.pt                                 each rank's Python / NumPy / torch random streams
``.pt`` files hold tensors, lists and numbers only and are read with ``torch.load(weights_only=True)``: no code runs.
"""
from __future__ import annotations

import json
import random
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from uer_ray.errors import UserError
from uer_ray.train.checkpoint import TRAIN_STATE_JSON, load_weights, save_checkpoint
from uer_ray.train.data_position import DataPosition
from uer_ray.train.optim import Schedule

OPTIMIZER = "optimizer.pt"


def rng_file(rank: int) -> str:
    return f"rng_rank{rank}.pt"


@dataclass
class TrainerState:
    """Where a run stands; JSON in every checkpoint (``trainer_state.json``)."""

    step: int = 0  # optimizer steps done
    tokens: int = 0  # non-padding tokens trained on, all ranks
    samples: int = 0
    seconds: float = 0.0  # training time, all attempts (reports, evaluations and restarts left out)
    epoch: int = 0  # the next batch to read: (epoch, batch)
    batch: int = 0
    best_metric: float | None = None  # fine-tuning: the best dev metric so far
    stale_evaluations: int = 0  # dev evaluations since the best one (early stopping)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])  # the W&B run continued on resume
    layout: dict = field(default_factory=dict)  # what the data order and schedule depend on (see ``layout``)

    @property
    def position(self) -> DataPosition:
        return DataPosition(self.epoch, self.batch)

    def advance(self, position: DataPosition) -> None:
        self.epoch, self.batch = position.epoch, position.batch


def layout(hp, world_size: int, total_steps: int, data_fingerprint: str) -> dict:
    """What must not change for a resume to be exact."""
    return {"workers": world_size, "batch_size": hp.batch_size, "grad_accum_steps": hp.grad_accum_steps,
            "seed": hp.seed, "group_by_length": hp.group_by_length, "total_steps": total_steps,
            "data": data_fingerprint}


def check_resume(saved: TrainerState, now: dict, hp) -> None:
    """Refuse, with one line, a resume that could not continue the run exactly."""
    was = saved.layout
    keys = {"workers": "run.num_workers", "batch_size": "batch_size", "grad_accum_steps": "grad_accum_steps",
            "seed": "seed", "group_by_length": "group_by_length", "data": "the training data"}
    for key, name in keys.items():
        if key in was and was[key] != now[key]:
            raise UserError(
                f"{name} is {now[key]!r} but the checkpoint at step {saved.step} was made with {was[key]!r}: the data "
                f"order and random streams depend on it, so the run cannot continue exactly; set it back, or start a "
                f"new run (another run.name) warm-started from that checkpoint"
            )
    if was.get("total_steps", now["total_steps"]) != now["total_steps"]:
        before = Schedule(hp, was["total_steps"]).lr(saved.step)
        after = Schedule(hp, now["total_steps"]).lr(saved.step)
        if not np.isclose(before, after, rtol=1e-9, atol=0):
            raise UserError(
                f"total_steps is {now['total_steps']} but the run at step {saved.step} was scheduled for "
                f"{was['total_steps']}: its learning rate would jump from {before:.3g} to {after:.3g}; keep "
                f"total_steps, or use a schedule that does not depend on it (scheduler constant or inverse_sqrt, "
                f"with warmup_steps)"
            )


# ---------------------------------------------------------------------------------------------------------------------
# Random streams
# ---------------------------------------------------------------------------------------------------------------------
def capture_rng() -> dict:
    version, mt_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": torch.tensor(mt_state, dtype=torch.int64),
        "python_gauss": [] if gauss is None else [gauss],
        "numpy": torch.from_numpy(np_keys.astype(np.int64)),
        "numpy_extra": [int(np_pos), int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    gauss = state["python_gauss"][0] if state["python_gauss"] else None
    random.setstate((3, tuple(int(x) for x in state["python"].tolist()), gauss))
    pos, has_gauss, cached = state["numpy_extra"]
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------------------
# Save and restore
# ---------------------------------------------------------------------------------------------------------------------
def write_checkpoint(directory: Path, rank: int, model, optimizer, precision, state: TrainerState, config: dict,
                     vocab=None) -> Path:
    """This rank's part of a checkpoint, into a fresh local directory that Ray Train uploads and merges."""
    directory.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        save_checkpoint(directory, model, config, vocab)
        torch.save({"optimizer": optimizer.state_dict(), "scaler": precision.state_dict()}, directory / OPTIMIZER)
        (directory / TRAIN_STATE_JSON).write_text(json.dumps(asdict(state), indent=2))
    torch.save(capture_rng(), directory / rng_file(rank))
    return directory


def read_trainer_state(directory: Path) -> TrainerState:
    return TrainerState(**json.loads((Path(directory) / TRAIN_STATE_JSON).read_text()))


def restore_checkpoint(directory: Path, rank: int, model, optimizer, precision) -> TrainerState:
    """Weights, optimizer, scaler and this rank's random streams; returns the trainer state."""
    directory = Path(directory)
    load_weights(directory, model)
    saved = torch.load(directory / OPTIMIZER, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    precision.load_state_dict(saved["scaler"])
    rng = directory / rng_file(rank)
    if rng.is_file():
        restore_rng(torch.load(rng, map_location="cpu", weights_only=True))
    return read_trainer_state(directory)

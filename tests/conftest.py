"""Shared fixtures: the reference data under ../shared/data/uer and one real local Ray (2 CPUs) for the session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "uer"
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = "0.1"  # each ray.train.report waits one poll


@pytest.fixture(scope="session")
def data_dir() -> Path:
    assert DATA.is_dir(), f"reference data not found at {DATA}"
    return DATA


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray with 2 CPUs, shared by every test that needs one."""
    import ray
    from ray.data import DataContext

    from uer_ray.runtime import init_ray
    from uer_ray.config import RunConfig

    init_ray(RunConfig(), num_cpus=2)
    DataContext.get_current().execution_no_progress_timeout_s = 300  # a resource deadlock fails, not hangs
    yield ray
    ray.shutdown()
